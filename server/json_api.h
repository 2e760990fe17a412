/* server/json_api.h — the JSON side of the HTTP API: parsing and validating
 * POST /v1/generate bodies (400 for malformed JSON, 422 naming the field for
 * well-formed but invalid values; json_api.c), turning a request into the
 * model's N and condition (json_api_task.c), the one error shape {"error":{"code","type","message"}}, and
 * named tensors as JSON ({"fc1.weight": {"shape": [h, d], "data": [...]}},
 * data row-major, float32 printed with 9 significant digits so it round-trips
 * exactly). No HTTP here, so tests/unit/test_server_api.c can drive it. */
#ifndef LTDI_SERVER_JSON_API_H
#define LTDI_SERVER_JSON_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LTDI_API_MODEL_REF_MAX 160
#define LTDI_API_MAX_ROWS 100000
#define LTDI_API_MAX_COLS 65536
/* jansson flags for every response: compact, float32-exact reals. */
#define LTDI_API_DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(9))

typedef struct ltdi_api_error {
  int status;       /* HTTP status */
  const char *type; /* "invalid_request_error", "validation_error", ... */
  char message[320];
} ltdi_api_error;

/* Sets *e; returns the negative code `rc` so callers can `return set(...)`. */
int ltdi_api_fail(ltdi_api_error *e, int status, int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* The error type string used for an HTTP status. */
const char *ltdi_api_error_type(int status);

/* {"error":{"code":status,"type":type,"message":msg}} as malloc'd text
 * (NULL only on OOM). type NULL → ltdi_api_error_type(status). */
char *ltdi_api_error_body(int status, const char *type, const char *msg);

enum ltdi_cond_kind {
  LTDI_COND_SUPPORT = 1,        /* support.embeddings (n, d) + support.labels (n) */
  LTDI_COND_PROTOTYPES = 2,     /* prototypes (N, d) */
  LTDI_COND_TASK_EMBEDDING = 3, /* task_embedding (N*d) */
  LTDI_COND_TEXTS = 4,          /* support.texts (n) + support.labels (n): a LoRA model's
                                 * support set, embedded by the daemon's encoder */
};

/* PEFT: a LoRA model's adapter as a tar of its PEFT folder (server/tar.h). */
enum ltdi_out_format {
  LTDI_FORMAT_UNSET = -1,
  LTDI_FORMAT_JSON = 0,
  LTDI_FORMAT_SAFETENSORS = 1,
  LTDI_FORMAT_PEFT = 2,
};

typedef struct ltdi_gen_request {
  char model[LTDI_API_MODEL_REF_MAX]; /* "" = the default model */
  int kind;                           /* enum ltdi_cond_kind */
  int rows, cols;                     /* shape of values */
  float *values;                      /* (rows, cols) malloc'd */
  int32_t *labels;                    /* (rows) malloc'd, support only */
  char **texts;                       /* (rows) malloc'd NUL-terminated strings, texts only */
  size_t *text_lens;                  /* (rows) their byte lengths */
  float *unlabeled;                   /* (n_unlabeled, unlabeled_cols) malloc'd or NULL: the
                                       * task's own unlabeled inputs (class-token models) */
  int n_unlabeled, unlabeled_cols;
  uint64_t seed;
  int has_seed;
  int steps;   /* 0 = the model's T */
  int samples; /* >= 1; > 1 needs a support set */
  int format;  /* enum ltdi_out_format */
} ltdi_gen_request;

/* Parses and checks everything that does not depend on the model. 0 or a
 * negative code with *e set (400 malformed, 422 invalid field). On error the
 * request holds nothing that needs freeing; on success free it with
 * ltdi_gen_request_free. */
int ltdi_api_parse_generate(const char *body, size_t len, int max_samples, ltdi_gen_request *r,
                            ltdi_api_error *e);
void ltdi_gen_request_free(ltdi_gen_request *r);

/* The model-dependent checks (422) and the task embedding c = [p_1; …; p_N]
 * (class means of the support set, or the prototypes / embedding as given).
 * cond (ways * feat_dim). 0 or a negative code with *e set. */
int ltdi_api_task_embedding(const ltdi_gen_request *r, int ways, int feat_dim,
                            float *cond /* (ways*feat_dim) */, ltdi_api_error *e);

/* The same checks and errors for a model conditioned on prototypes of
 * L2-normalised features (a class-token model): a support set gives
 * ltdi_task_prototypes; prototypes and task_embedding are taken as given,
 * so the client must have normalised them the same way. With `unlabeled`
 * (support sets only: the refinement weighs each class's support count),
 * the prototypes are refined by LTDI_API_TRANSDUCTIVE_STEPS soft k-means
 * steps over those inputs (ltdi_task_prototypes_transductive). */
#define LTDI_API_TRANSDUCTIVE_STEPS 1 /* chosen on meta-val, docs/RESULTS.md */
int ltdi_api_task_prototypes(const ltdi_gen_request *r, int ways, int feat_dim,
                             float *cond /* (ways*feat_dim) */, ltdi_api_error *e);

/* The condition of a LoRA-token model (core/model.h): the N L2-normalised
 * class means of the base encoder's embeddings. support.embeddings (the
 * encoder's sentence embeddings, as a client computed them) give
 * ltdi_text_class_means, the trainer's own (core/text/text_means.h);
 * prototypes and task_embedding are taken as given. support.texts are the
 * daemon's to embed (handlers_generate.c), not this function's. 0 or 422
 * naming the field. */
int ltdi_api_lora_condition(const ltdi_gen_request *r, int ways, int feat_dim,
                            float *cond /* (ways*feat_dim) */, ltdi_api_error *e);

/* The number of classes N a request asks for, for a model that generates
 * heads of any N in min_ways..max_ways over feat_dim features: a support
 * set's distinct labels (they must be 0..N-1, each present), the rows of
 * prototypes, or task_embedding's length / feat_dim (which must divide).
 * 0, or 422 naming the field — and the limits when N is outside them. */
int ltdi_api_request_ways(const ltdi_gen_request *r, int feat_dim, int min_ways, int max_ways,
                          int *ways, ltdi_api_error *e);

/* {"shape": [...], "data": [...]} for one tensor, or NULL on OOM. */
json_t *ltdi_api_tensor_json(int ndim, const int64_t *shape, const float *data);

/* Writes float32 f as the shortest-effort JSON number with 9 significant
 * digits (enough for an exact float32 round trip), without printf: the
 * weights of one head are a few thousand numbers and %.9g dominated the
 * response time. out needs 24 bytes; returns the length. */
int ltdi_api_format_f32(char *out, float f);

/* The weights object {"name": {"shape": [...], "data": [...]}, ...} as text
 * (malloc'd, NUL-terminated), tensors in the given order; NULL on OOM or a
 * non-finite value. data[i] (∏ shape) for tensor i. */
char *ltdi_api_weights_text(int n, const char *const *names, const int *ndims,
                            const int64_t *const *shapes, const float *const *data);

#ifdef __cplusplus
}
#endif
#endif
