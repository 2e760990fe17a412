/* tests/unit/test_server_lora.c — ltdi-serve with a LoRA-token model
 * (issue 12 parts 3-6): a tiny random BERT (tests/unit/lora_text_fixture.h)
 * as --encoder-dir and a tiny LoRA model over it. The adapter answered for
 * support texts is the one the model generates, in-process, from the class
 * means of core/text/text_means.h (bit for bit), whether the request was
 * batched with others or not; the tar unpacks with tar(1) into the same
 * bytes as --adapter-dir's folder and GET /v1/tasks/{id}/adapter; texts,
 * embeddings and prototypes of the same task give the same task; bad input
 * gets 4xx naming the field; a model of another base is refused; the
 * adapter folder survives a SIGKILL in the middle of its write; and PEFT
 * (the Python reference, lora_reference-style: skipped without it) scores
 * the served adapter exactly as ltdi does. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/gen_pool.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "core/text/bert.h"
#include "core/text/bert_lora.h"
#include "core/text/lora.h"
#include "core/text/text_means.h"
#include "core/text/tokenizer.h"
#include "server/server.h"
#include "tests/unit/http_client.h"
#include "tests/unit/lora_text_fixture.h"
#include "tests/unit/model_files.h"

#define C_DIM 16 /* the encoder's width = the model's feat_dim */
#define MAXW 5
#define RANK 2
#define MAXLEN 24 /* the fixture encoder's positions: the daemon cuts texts there */
#define DIM_MAX 1024

/* The encoder of the test at hand: the fixture's, or the real MiniLM's. */
static int g_dim = C_DIM, g_maxlen = MAXLEN;

typedef struct world {
  char dir[256], enc[300], enc2[300], adapters[300];
  ltdi_server *s;
  int port;
} world;

static void sha_of(const char *path, char hex[65]) {
  uint8_t *b = NULL;
  size_t n = 0;
  char err[256];
  cr_assert_eq(ltdi_file_read(path, &b, &n, err, sizeof err), 0, "%s", err);
  ltdi_sha256_hex(b, n, hex);
  free(b);
}

/* A LoRA model over the encoder of `enc_dir` (query,value of 2 layers,
 * r 2), with non-trivial denoiser, init, base and statistics. */
static void write_model(const char *path, const char *enc_dir, uint64_t seed) {
  ltdi_backend *be = NULL;
  cr_assert_eq(ltdi_backend_cpu_create(&be, 1), 0);
  ltdi_lora_spec spec;
  char err[256], model_file[400];
  ltdi_bert_config bc;
  cr_assert_eq(ltdi_bert_config_read(enc_dir, &bc, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_lora_spec_bert(&spec, bc.num_layers, bc.hidden_size, bc.intermediate_size,
                                   "query,value", RANK, 4.0f, err, sizeof err), 0, "%s", err);
  snprintf(spec.base_model, sizeof spec.base_model, "tiny-bert");
  snprintf(model_file, sizeof model_file, "%s/model.safetensors", enc_dir);
  sha_of(model_file, spec.base_model_sha256);
  ltdi_model *m = random_lora_model(be, &spec, bc.hidden_size, MAXW, 6, seed, 0.0f, 0.05f, 0.0f);
  cr_assert_eq(ltdi_model_save(m, path), 0);
  ltdi_model_free(m);
  ltdi_backend_destroy(be);
}

static void world_files(world *w) {
  memset(w, 0, sizeof *w);
  tb_tmpdir_make(w->dir, "serve_lora");
  snprintf(w->enc, sizeof w->enc, "%s/enc", w->dir);
  snprintf(w->enc2, sizeof w->enc2, "%s/enc2", w->dir);
  snprintf(w->adapters, sizeof w->adapters, "%s/adapters", w->dir);
  ltf_write_encoder(w->enc, C_DIM, 11);
  ltf_write_encoder(w->enc2, C_DIM, 12);
  cr_assert_eq(mkdir(w->adapters, 0755), 0);
  char p[400];
  snprintf(p, sizeof p, "%s/lora.safetensors", w->dir);
  write_model(p, w->enc, 5);
  snprintf(p, sizeof p, "%s/other.safetensors", w->dir);
  write_model(p, w->enc2, 6); /* trained on another base */
}

static void world_start(world *w, long long delay_us, long long max_batch) {
  ltdi_serve_config c;
  ltdi_serve_config_defaults(&c);
  c.port = 0;
  snprintf(c.model_dir, sizeof c.model_dir, "%s", w->dir);
  snprintf(c.db, sizeof c.db, "%s/registry.db", w->dir);
  snprintf(c.model, sizeof c.model, "lora.safetensors");
  snprintf(c.device, sizeof c.device, "cpu");
  snprintf(c.cpu_kernel, sizeof c.cpu_kernel, "invariant");
  snprintf(c.encoder_dir, sizeof c.encoder_dir, "%s", w->enc);
  snprintf(c.adapter_dir, sizeof c.adapter_dir, "%s", w->adapters);
  c.compute_threads = 1;
  c.max_queue_delay_us = delay_us;
  c.max_batch = max_batch;
  char err[512] = "";
  cr_assert_eq(ltdi_server_create(&w->s, &c, err, sizeof err), 0, "server: %s", err);
  cr_assert_eq(ltdi_server_start(w->s, &w->port, err, sizeof err), 0, "listen: %s", err);
}

static void world_stop(world *w) {
  if (w->s) {
    ltdi_server_drain(w->s);
    ltdi_server_free(w->s);
  }
  w->s = NULL;
}

/* ---- HTTP ------------------------------------------------------------------ */

static http_resp req(int port, const char *method, const char *path, const char *body,
                     size_t blen) {
  return http_request(port, method, path, body, blen, NULL);
}

static http_resp post(const world *w, const char *body) {
  return req(w->port, "POST", "/v1/generate", body, strlen(body));
}

/* ---- tasks ------------------------------------------------------------------ */

/* A 3-way task of the fixture's words: texts (n) and labels. */
#define TASK_N 9
static const char *TEXTS[TASK_N] = {"waa wab n1", "wac waa", "wad wab wac n2",
                                    "wae waf", "wag wae n3", "wah waf wag",
                                    "wai waj", "wak wai n4", "wal waj wak"};
static const int LABELS[TASK_N] = {0, 0, 0, 1, 1, 1, 2, 2, 2};

static char *texts_body(uint64_t seed, const char *format) {
  json_t *t = json_array(), *l = json_array();
  for (int i = 0; i < TASK_N; i++) {
    json_array_append_new(t, json_string(TEXTS[i]));
    json_array_append_new(l, json_integer(LABELS[i]));
  }
  json_t *o = json_pack("{s:{s:o,s:o},s:I,s:s}", "support", "texts", t, "labels", l, "seed",
                        (json_int_t)seed, "format", format);
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

typedef struct local {
  ltdi_backend *be, *ebe;
  ltdi_model *m;
  ltdi_gen_pool *pool;
  ltdi_bert *bert;
  struct ltdi_tokenizer *tok;
} local;

/* The model and encoder in-process, as the daemon runs them. */
static void local_open(local *L, const world *w) {
  char err[256], path[400];
  memset(L, 0, sizeof *L);
  snprintf(path, sizeof path, "%s/lora.safetensors", w->dir);
  cr_assert_eq(ltdi_backend_cpu_create(&L->be, 1), 0);
  cr_assert_eq(ltdi_model_load(&L->m, L->be, path, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_gen_pool_create(&L->pool, L->m, 1, 16, LTDI_KERNEL_INVARIANT, 1), 0);
  cr_assert_eq(ltdi_backend_cpu_create(&L->ebe, 1), 0);
  cr_assert_eq(ltdi_bert_open(&L->bert, L->ebe, w->enc, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_bert_tokenizer_open(&L->tok, w->enc, err, sizeof err), 0, "%s", err);
}

static void local_close(local *L) {
  ltdi_gen_pool_free(L->pool);
  ltdi_model_free(L->m);
  ltdi_tokenizer_close(L->tok);
  ltdi_bert_free(L->bert);
  ltdi_backend_destroy(L->be);
  ltdi_backend_destroy(L->ebe);
}

/* The task's class means (3, C) and sentence embeddings (n, C). */
static void local_means(local *L, float *means, float *emb) {
  size_t lens[TASK_N];
  int32_t labels[TASK_N];
  for (int i = 0; i < TASK_N; i++) lens[i] = strlen(TEXTS[i]), labels[i] = LABELS[i];
  cr_assert_eq(ltdi_text_embed_class_means(L->bert, L->tok, TEXTS, lens, labels, TASK_N, 3, g_maxlen,
                                           64, means, NULL, NULL), 0);
  if (emb) cr_assert_eq(ltdi_bert_embed_texts(L->bert, L->tok, TEXTS, lens, TASK_N, g_maxlen, 64, emb, NULL), 0);
}

/* The adapter (P) for seed, generated alone. */
static float *local_adapter(local *L, const float *means, uint64_t seed) {
  const size_t P = ltdi_model_head_params(L->m, 3);
  float *w = malloc(P * sizeof *w);
  ltdi_gen_options o = ltdi_gen_pool_options(L->pool);
  cr_assert_eq(ltdi_gen_pool_run_ways(L->pool, 3, means, &seed, 1, &o, w), 0);
  return w;
}

/* The flat adapter of a PEFT folder. */
static ltdi_lora *read_folder(const char *dir) {
  ltdi_lora *l = NULL;
  char err[512];
  cr_assert_eq(ltdi_lora_read_peft(dir, &l, err, sizeof err), 0, "%s", err);
  return l;
}

static void file_bytes(const char *path, uint8_t **b, size_t *n) {
  char err[256];
  cr_assert_eq(ltdi_file_read(path, b, n, err, sizeof err), 0, "%s", err);
}

static void expect_same_file(const char *a, const char *b) {
  uint8_t *x, *y;
  size_t nx, ny;
  file_bytes(a, &x, &nx);
  file_bytes(b, &y, &ny);
  cr_expect(nx == ny && memcmp(x, y, nx) == 0, "%s and %s differ", a, b);
  free(x), free(y);
}

static void init_curl(void) { curl_global_init(CURL_GLOBAL_ALL); }
TestSuite(server_lora, .init = init_curl, .timeout = 120);

/* ---- the adapter of support texts ---------------------------------------------- */

Test(server_lora, texts_give_the_generated_adapter_as_a_tar_a_folder_and_again) {
  world w;
  world_files(&w);
  world_start(&w, 0, 32);
  char *body = texts_body(42, "peft");
  http_resp r = post(&w, body);
  cr_assert_eq(r.status, 200, "%ld %.400s", r.status, r.body);
  char ct[128], id[80];
  http_header(&r, "Content-Type", ct, sizeof ct);
  http_header(&r, "X-Task-Id", id, sizeof id);
  cr_expect_str_eq(ct, "application/x-tar");
  cr_assert_eq(strlen(id), 64);
  /* tar(1) unpacks it into <task_id>/ with PEFT's two files. */
  char tarp[400], out[400], cmd[2000], a[600], b[600];
  snprintf(tarp, sizeof tarp, "%s/answer.tar", w.dir);
  snprintf(out, sizeof out, "%s/untar", w.dir);
  FILE *f = fopen(tarp, "wb");
  cr_assert_eq(fwrite(r.body, 1, r.len, f), r.len);
  fclose(f);
  snprintf(cmd, sizeof cmd, "mkdir -p '%s' && tar -xf '%s' -C '%s'", out, tarp, out);
  cr_assert_eq(system(cmd), 0, "tar -xf failed");
  const char *files[2] = {"adapter_config.json", "adapter_model.safetensors"};
  for (int k = 0; k < 2; k++) {
    snprintf(a, sizeof a, "%s/%s/%s", out, id, files[k]);
    snprintf(b, sizeof b, "%s/%s/%s", w.adapters, id, files[k]);
    expect_same_file(a, b); /* --adapter-dir holds the same bytes */
  }
  /* The adapter is the model's own for these texts' class means. */
  local L;
  local_open(&L, &w);
  float means[3 * C_DIM];
  local_means(&L, means, NULL);
  float *want = local_adapter(&L, means, 42);
  snprintf(a, sizeof a, "%s/%s", out, id);
  ltdi_lora *got = read_folder(a);
  cr_assert_eq(ltdi_lora_count(got), ltdi_model_head_params(L.m, 3));
  cr_expect(memcmp(ltdi_lora_params(got), want, ltdi_lora_count(got) * sizeof(float)) == 0,
            "the served adapter is not the generated one");
  cr_expect_str_eq(got->spec.base_model_sha256, L.m->lora->base_model_sha256);
  /* GET /v1/tasks/{id}/adapter: the very same tar; the same request again too. */
  char path[200];
  snprintf(path, sizeof path, "/v1/tasks/%s/adapter", id);
  http_resp g = req(w.port, "GET", path, NULL, 0);
  cr_assert_eq(g.status, 200, "%.300s", g.body);
  cr_expect(g.len == r.len && memcmp(g.body, r.body, r.len) == 0, "GET adapter differs from POST");
  http_resp again = post(&w, body);
  cr_expect(again.len == r.len && memcmp(again.body, r.body, r.len) == 0, "a repeat differs");
  char cached[16];
  http_header(&again, "X-Cached", cached, sizeof cached);
  cr_expect_str_eq(cached, "true");
  /* A stored task whose folder is gone gets it back. */
  snprintf(cmd, sizeof cmd, "rm -rf '%s/%s'", w.adapters, id);
  cr_assert_eq(system(cmd), 0);
  http_resp third = post(&w, body);
  cr_expect_eq(third.status, 200);
  snprintf(a, sizeof a, "%s/%s/adapter_model.safetensors", out, id);
  snprintf(b, sizeof b, "%s/%s/adapter_model.safetensors", w.adapters, id);
  expect_same_file(a, b);
  free(r.body), free(g.body), free(again.body), free(third.body), free(body), free(want);
  ltdi_lora_free(got);
  local_close(&L);
  world_stop(&w);
  tb_tmpdir_remove(w.dir);
}

Test(server_lora, json_safetensors_embeddings_and_prototypes_agree) {
  world w;
  world_files(&w);
  world_start(&w, 0, 32);
  char *body = texts_body(7, "json");
  http_resp r = post(&w, body);
  cr_assert_eq(r.status, 200, "%.400s", r.body);
  json_t *o = http_json(&r);
  const char *id = json_string_value(json_object_get(o, "task_id"));
  cr_assert_not_null(id);
  cr_expect_str_eq(json_string_value(json_object_get(o, "layout")), "lora");
  json_t *cfg = json_object_get(o, "adapter_config");
  cr_assert(json_is_object(cfg));
  cr_expect_str_eq(json_string_value(json_object_get(cfg, "peft_type")), "LORA");
  cr_expect_eq(json_integer_value(json_object_get(cfg, "r")), RANK);
  json_t *wt = json_object_get(o, "weights");
  json_t *a0 = json_object_get(wt, "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight");
  cr_assert(json_is_object(a0), "no PEFT key in the weights");
  cr_expect_eq(json_integer_value(json_array_get(json_object_get(a0, "shape"), 0)), RANK);
  /* safetensors: adapter_model.safetensors itself. */
  char *sbody = texts_body(7, "safetensors");
  http_resp st = post(&w, sbody);
  cr_assert_eq(st.status, 200);
  char p[600];
  snprintf(p, sizeof p, "%s/%s/adapter_model.safetensors", w.adapters, id);
  uint8_t *fb;
  size_t fn;
  file_bytes(p, &fb, &fn);
  cr_expect(fn == st.len && memcmp(fb, st.body, fn) == 0, "safetensors answer != the folder's");
  /* The same task from its embeddings and from its class means. */
  local L;
  local_open(&L, &w);
  float means[3 * C_DIM], emb[TASK_N * C_DIM];
  local_means(&L, means, emb);
  json_t *E = json_array(), *lab = json_array(), *M = json_array();
  for (int i = 0; i < TASK_N; i++) {
    json_t *row = json_array();
    for (int k = 0; k < C_DIM; k++) json_array_append_new(row, json_real(emb[i * C_DIM + k]));
    json_array_append_new(E, row);
    json_array_append_new(lab, json_integer(LABELS[i]));
  }
  for (int c = 0; c < 3; c++) {
    json_t *row = json_array();
    for (int k = 0; k < C_DIM; k++) json_array_append_new(row, json_real(means[c * C_DIM + k]));
    json_array_append_new(M, row);
  }
  json_t *be = json_pack("{s:{s:o,s:o},s:i,s:s}", "support", "embeddings", E, "labels", lab,
                         "seed", 7, "format", "json");
  json_t *bp = json_pack("{s:o,s:i,s:s}", "prototypes", M, "seed", 7, "format", "json");
  char *tb = json_dumps(be, JSON_COMPACT | JSON_REAL_PRECISION(9));
  char *tp = json_dumps(bp, JSON_COMPACT | JSON_REAL_PRECISION(9));
  http_resp re = post(&w, tb), rp = post(&w, tp);
  cr_assert_eq(re.status, 200, "%.300s", re.body);
  cr_assert_eq(rp.status, 200, "%.300s", rp.body);
  json_t *oe = http_json(&re), *op = http_json(&rp);
  cr_expect_str_eq(json_string_value(json_object_get(oe, "task_id")), id);
  cr_expect_str_eq(json_string_value(json_object_get(op, "task_id")), id);
  /* kind and the adapter's spec in the registry, filterable. */
  http_resp ml = req(w.port, "GET", "/v1/models?kind=lora", NULL, 0);
  json_t *mo = http_json(&ml);
  json_t *m0 = json_array_get(json_object_get(mo, "models"), 0);
  cr_assert_not_null(m0, "%.300s", ml.body);
  cr_expect_str_eq(json_string_value(json_object_get(m0, "kind")), "lora");
  json_t *lo = json_object_get(m0, "lora");
  cr_expect_eq(json_integer_value(json_object_get(lo, "r")), RANK);
  cr_expect_str_eq(json_string_value(json_object_get(lo, "base_model_sha256")), L.m->lora->base_model_sha256);
  cr_expect_eq(json_array_size(json_object_get(lo, "target_modules")), 2);
  http_resp mh = req(w.port, "GET", "/v1/models?kind=head", NULL, 0);
  json_t *mho = http_json(&mh);
  cr_expect_eq(json_array_size(json_object_get(mho, "models")), 0);
  json_decref(o), json_decref(oe), json_decref(op), json_decref(be), json_decref(bp);
  json_decref(mo), json_decref(mho);
  free(tb), free(tp), free(fb), free(body), free(sbody);
  free(r.body), free(st.body), free(re.body), free(rp.body), free(ml.body), free(mh.body);
  local_close(&L);
  world_stop(&w);
  tb_tmpdir_remove(w.dir);
}

/* ---- batching -------------------------------------------------------------- */

typedef struct racer {
  const world *w;
  uint64_t seed;
  http_resp r;
} racer;

static void *race(void *p) {
  racer *x = p;
  char *body = texts_body(x->seed, "json");
  x->r = post(x->w, body);
  free(body);
  return NULL;
}

Test(server_lora, concurrent_requests_batch_and_match_single_ones) {
  world w;
  world_files(&w);
  /* A long delay and a batch of exactly the racers: the pass starts when
   * all four are queued (or every open connection has a job). */
  world_start(&w, 2000000, 4);
  racer x[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    x[i].w = &w, x[i].seed = 100 + (uint64_t)i;
    cr_assert_eq(pthread_create(&th[i], NULL, race, &x[i]), 0);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  local L;
  local_open(&L, &w);
  float means[3 * C_DIM];
  local_means(&L, means, NULL);
  const size_t P = ltdi_model_head_params(L.m, 3);
  int batched = 0;
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(x[i].r.status, 200, "%.300s", x[i].r.body);
    json_t *o = http_json(&x[i].r);
    batched |= json_integer_value(json_object_get(json_object_get(o, "timings"), "batch_size")) > 1;
    float *want = local_adapter(&L, means, x[i].seed);
    const char *id = json_string_value(json_object_get(o, "task_id"));
    char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", w.adapters, id);
    ltdi_lora *got = read_folder(dir);
    cr_expect(memcmp(ltdi_lora_params(got), want, P * sizeof(float)) == 0,
              "seed %d: the batched adapter differs from the single one", (int)x[i].seed);
    ltdi_lora_free(got);
    free(want);
    json_decref(o);
    free(x[i].r.body);
  }
  cr_expect(batched, "no request was batched with another");
  local_close(&L);
  world_stop(&w);
  tb_tmpdir_remove(w.dir);
}

/* ---- bad input ------------------------------------------------------------- */

static void expect_error(const world *w, const char *body, size_t len, long status,
                         const char *needle) {
  http_resp r = req(w->port, "POST", "/v1/generate", body, len);
  cr_expect_eq(r.status, status, "%s -> %ld %.300s", body, r.status, r.body);
  cr_expect(r.body && strstr(r.body, needle), "%.200s: message lacks '%s': %.300s", body, needle,
            r.body);
  free(r.body);
}

Test(server_lora, bad_input_names_the_field) {
  world w;
  world_files(&w);
  world_start(&w, 0, 32);
  const char *empty = "{\"support\":{\"texts\":[\"waa\",\"\"],\"labels\":[0,1]}}";
  expect_error(&w, empty, strlen(empty), 422, "support.texts[1]");
  const char bad_utf8[] = "{\"support\":{\"texts\":[\"waa\",\"w\xff\"],\"labels\":[0,1]}}";
  expect_error(&w, bad_utf8, sizeof bad_utf8 - 1, 400, "UTF-8");
  const char *notstr = "{\"support\":{\"texts\":[\"waa\",3],\"labels\":[0,1]}}";
  expect_error(&w, notstr, strlen(notstr), 422, "support.texts[1]");
  const char *count = "{\"support\":{\"texts\":[\"waa\",\"wab\"],\"labels\":[0]}}";
  expect_error(&w, count, strlen(count), 422, "support.labels");
  const char *width = "{\"support\":{\"embeddings\":[[1,0],[0,1]],\"labels\":[0,1]}}";
  expect_error(&w, width, strlen(width), 422, "support.embeddings");
  const char *pwidth = "{\"prototypes\":[[1,0],[0,1]]}";
  expect_error(&w, pwidth, strlen(pwidth), 422, "prototypes");
  const char *one = "{\"support\":{\"texts\":[\"waa\",\"wab\"],\"labels\":[0,0]}}";
  expect_error(&w, one, strlen(one), 422, "N = 1");
  /* Head-style requests to a LoRA model. */
  const char *best = "{\"support\":{\"texts\":[\"waa\",\"wab\"],\"labels\":[0,1]},\"samples\":2}";
  expect_error(&w, best, strlen(best), 422, "samples");
  const char *unl = "{\"support\":{\"embeddings\":[[1,0],[0,1]],\"labels\":[0,1]},"
                    "\"unlabeled\":[[1,0]]}";
  expect_error(&w, unl, strlen(unl), 422, "");
  const char *fmt = "{\"prototypes\":[[1]],\"format\":\"tar\"}";
  expect_error(&w, fmt, strlen(fmt), 422, "format");
  /* A LoRA model of another base: refused at registration, naming it. */
  const char *reg = "{\"name\":\"other\",\"path\":\"other.safetensors\"}";
  http_resp r = req(w.port, "POST", "/v1/models", reg, strlen(reg));
  cr_expect_eq(r.status, 422, "%ld %.300s", r.status, r.body);
  cr_expect(r.body && strstr(r.body, "other.safetensors") && strstr(r.body, "sha256"), "%.300s",
            r.body);
  free(r.body);
  /* The adapter of a task that does not exist. */
  http_resp g = req(w.port, "GET", "/v1/tasks/00/adapter", NULL, 0);
  cr_expect_eq(g.status, 404);
  free(g.body);
  world_stop(&w);
  tb_tmpdir_remove(w.dir);
}

Test(server_lora, head_models_refuse_lora_requests_and_the_reverse) {
  world w;
  world_files(&w);
  char p[400];
  snprintf(p, sizeof p, "%s/head.safetensors", w.dir);
  write_class_token_model(p, C_DIM, 4, 3);
  world_start(&w, 0, 32);
  const char *reg = "{\"name\":\"head\",\"path\":\"head.safetensors\"}";
  http_resp r = req(w.port, "POST", "/v1/models", reg, strlen(reg));
  cr_assert_eq(r.status, 201, "%.300s", r.body);
  free(r.body);
  r = req(w.port, "POST", "/v1/models/head/versions/1/load", "", 0);
  cr_assert_eq(r.status, 200, "%.300s", r.body);
  free(r.body);
  const char *texts = "{\"model\":\"head\",\"support\":{\"texts\":[\"waa\",\"wab\"],\"labels\":[0,1]}}";
  expect_error(&w, texts, strlen(texts), 422, "support.texts");
  json_t *M = json_array();
  for (int c = 0; c < 2; c++) {
    json_t *row = json_array();
    for (int k = 0; k < C_DIM; k++) json_array_append_new(row, json_real(k == c ? 1.0 : 0.0));
    json_array_append_new(M, row);
  }
  json_t *o = json_pack("{s:s,s:o,s:i}", "model", "head", "prototypes", M, "seed", 1);
  json_object_set_new(o, "format", json_string("peft"));
  char *peft = json_dumps(o, JSON_COMPACT);
  expect_error(&w, peft, strlen(peft), 422, "format");
  /* A head task has no adapter. */
  json_object_set_new(o, "format", json_string("json"));
  char *ok = json_dumps(o, JSON_COMPACT);
  r = post(&w, ok);
  cr_assert_eq(r.status, 200, "%.300s", r.body);
  json_t *ro = http_json(&r);
  char path[200];
  snprintf(path, sizeof path, "/v1/tasks/%s/adapter", json_string_value(json_object_get(ro, "task_id")));
  http_resp g = req(w.port, "GET", path, NULL, 0);
  cr_expect_eq(g.status, 422, "%.300s", g.body);
  cr_expect(g.body && strstr(g.body, "no adapter"), "%.300s", g.body);
  http_resp mh = req(w.port, "GET", "/v1/models?kind=head", NULL, 0);
  json_t *mho = http_json(&mh);
  cr_expect_eq(json_array_size(json_object_get(mho, "models")), 1);
  cr_expect_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(mho, "models"), 0), "name")), "head");
  http_resp bad = req(w.port, "GET", "/v1/models?kind=bert", NULL, 0);
  cr_expect_eq(bad.status, 422);
  json_decref(o), json_decref(ro), json_decref(mho);
  free(peft), free(ok), free(r.body), free(g.body), free(mh.body), free(bad.body);
  world_stop(&w);
  tb_tmpdir_remove(w.dir);
}

Test(server_lora, a_missing_base_file_or_adapter_dir_stops_the_daemon_naming_it) {
  world w;
  world_files(&w);
  char p[400];
  snprintf(p, sizeof p, "%s/model.safetensors", w.enc);
  cr_assert_eq(unlink(p), 0);
  ltdi_serve_config c;
  ltdi_serve_config_defaults(&c);
  snprintf(c.model_dir, sizeof c.model_dir, "%s", w.dir);
  snprintf(c.db, sizeof c.db, "%s/registry.db", w.dir);
  snprintf(c.device, sizeof c.device, "cpu");
  snprintf(c.encoder_dir, sizeof c.encoder_dir, "%s", w.enc);
  char err[512] = "";
  ltdi_server *s = NULL;
  cr_expect_neq(ltdi_server_create(&s, &c, err, sizeof err), 0);
  cr_expect(strstr(err, "--encoder-dir") && strstr(err, "model.safetensors"), "%s", err);
  /* And an adapter folder that is not there. */
  snprintf(c.encoder_dir, sizeof c.encoder_dir, "%s", w.enc2);
  snprintf(c.adapter_dir, sizeof c.adapter_dir, "%s/nowhere", w.dir);
  cr_expect_neq(ltdi_server_create(&s, &c, err, sizeof err), 0);
  cr_expect(strstr(err, "--adapter-dir"), "%s", err);
  tb_tmpdir_remove(w.dir);
}

/* ---- SIGKILL in the middle of the folder's write ----------------------------- */

static int die_at_rename(const char *step, void *ctx) {
  (void)ctx;
  if (!strcmp(step, "rename")) raise(SIGKILL); /* both files written, not yet renamed */
  return 0;
}

Test(server_lora, the_adapter_folder_survives_sigkill_mid_write) {
  world w;
  world_files(&w);
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    ltdi__lora_set_write_hook(die_at_rename, NULL);
    world_start(&w, 0, 32);
    char *body = texts_body(9, "peft");
    (void)post(&w, body);
    _exit(3); /* not reached: the hook kills the daemon first */
  }
  int st = 0;
  cr_assert_eq(waitpid(pid, &st, 0), pid);
  cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the daemon was not killed mid-write");
  /* No adapter folder is visible under its name: only the temporary one. */
  DIR *d = opendir(w.adapters);
  struct dirent *e;
  int tmp = 0;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    cr_expect(strstr(e->d_name, ".tmp-") != NULL, "a partial folder is visible: %s", e->d_name);
    tmp++;
  }
  closedir(d);
  cr_expect_eq(tmp, 1, "the write did not get as far as its temporary folder");
  /* Restarted, the same request writes the whole folder. */
  world_start(&w, 0, 32);
  char *body = texts_body(9, "peft");
  http_resp r = post(&w, body);
  cr_assert_eq(r.status, 200, "%.300s", r.body);
  char id[80], dir[600];
  http_header(&r, "X-Task-Id", id, sizeof id);
  snprintf(dir, sizeof dir, "%s/%s", w.adapters, id);
  ltdi_lora *l = read_folder(dir);
  ltdi_lora_free(l);
  free(r.body), free(body);
  world_stop(&w);
  tb_tmpdir_remove(w.dir);
}

/* ---- PEFT scores the served adapter as ltdi does -------------------------------- */

static int have_peft(char *py, size_t n) {
  snprintf(py, n, "%s/.venv-ref/bin/python", LTDI_SOURCE_DIR);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "'%s' -c 'import peft, transformers' >/dev/null 2>&1", py);
  return access(py, X_OK) == 0 && system(cmd) == 0;
}

/* ltdi's own score of adapter `lo_params` on the query texts: the cosine
 * head on the frozen encoder's class means (the recipe's, lora_train.h). */
static int ltdi_right(local *L, const ltdi_lora_spec *spec, const float *params, const float *means,
                      const char *const *q, const int *ql, int nq, float *qemb) {
  char err[256];
  ltdi_bert_lora *lo = NULL;
  cr_assert_eq(ltdi_bert_lora_create(&lo, L->bert, spec, 0, err, sizeof err), 0, "%s", err);
  cr_assert_eq(ltdi_bert_lora_set(lo, params, ltdi_bert_lora_count(lo)), 0);
  ltdi_bert_lora_acts *a = NULL;
  cr_assert_eq(ltdi_bert_lora_acts_create(&a, lo, 1, g_maxlen, 0), 0);
  int right = 0;
  for (int i = 0; i < nq; i++) {
    int32_t ids[512], len = 0;
    int n = 0;
    cr_assert_eq(ltdi_tokenizer_encode(L->tok, q[i], strlen(q[i]), g_maxlen, ids, &n), 0);
    len = n;
    float e[DIM_MAX];
    cr_assert_eq(ltdi_bert_lora_forward(a, lo, ids, &len, 1, n, e), 0);
    memcpy(qemb + (size_t)i * g_dim, e, (size_t)g_dim * sizeof *e);
    int best = 0;
    double bs = -INFINITY;
    for (int c = 0; c < 3; c++) {
      double d = 0;
      for (int k = 0; k < g_dim; k++) d += (double)e[k] * means[c * g_dim + k];
      if (d > bs) bs = d, best = c;
    }
    right += best == ql[i];
  }
  ltdi_bert_lora_acts_free(a);
  ltdi_bert_lora_free(lo);
  return right;
}

/* Serves a task over HTTP, lets PEFT score the adapter folder, and
 * compares with ltdi's score and embeddings. */
static void peft_check(world *wp, const char *py) {
  world w = *wp;
  world_start(&w, 0, 32);
  char *body = texts_body(3, "peft");
  http_resp r = post(&w, body);
  cr_assert_eq(r.status, 200, "%.300s", r.body);
  char id[80], dir[600], task[400], cmd[2400];
  http_header(&r, "X-Task-Id", id, sizeof id);
  snprintf(dir, sizeof dir, "%s/%s", w.adapters, id);
  /* Queries: the task's words in other orders. */
  static const char *Q[] = {"wab waa", "waa wac wad", "wab n9", "waf wae", "wae wag n8",
                            "waf wah", "waj wai", "wai wak wal", "waj n7", "waa waf waj"};
  static const int QL[] = {0, 0, 0, 1, 1, 1, 2, 2, 2, 0};
  const int nq = 10;
  json_t *jt = json_array(), *jl = json_array(), *jq = json_array(), *jql = json_array();
  for (int i = 0; i < TASK_N; i++) {
    json_array_append_new(jt, json_string(TEXTS[i]));
    json_array_append_new(jl, json_integer(LABELS[i]));
  }
  for (int i = 0; i < nq; i++) {
    json_array_append_new(jq, json_string(Q[i]));
    json_array_append_new(jql, json_integer(QL[i]));
  }
  json_t *o = json_pack("{s:o,s:o,s:o,s:o,s:i}", "support", jt, "labels", jl, "queries", jq,
                        "query_labels", jql, "max_length", g_maxlen);
  snprintf(task, sizeof task, "%s/task.json", w.dir);
  cr_assert_eq(json_dump_file(o, task, 0), 0);
  json_decref(o);
  char embp[400];
  snprintf(embp, sizeof embp, "%s/peft_emb.f32", w.dir);
  snprintf(cmd, sizeof cmd, "'%s' '%s/tests/python/peft_serve_score.py' '%s' '%s' '%s' '%s'", py,
           LTDI_SOURCE_DIR, w.enc, dir, task, embp);
  FILE *p = popen(cmd, "r");
  cr_assert_not_null(p);
  int peft_right = -1, total = 0;
  cr_assert_eq(fscanf(p, "%d %d", &peft_right, &total), 2, "no score from %s", cmd);
  cr_assert_eq(pclose(p), 0, "%s failed", cmd);
  /* ltdi's score of the same adapter. */
  local L;
  local_open(&L, &w);
  float means[3 * DIM_MAX];
  local_means(&L, means, NULL);
  ltdi_lora *l = read_folder(dir);
  static float qemb[10 * DIM_MAX], frozen[10 * DIM_MAX];
  int right = ltdi_right(&L, &l->spec, ltdi_lora_params(l), means, Q, QL, nq, qemb);
  cr_expect_eq(total, nq);
  /* PEFT's adapted embeddings are ltdi's, to float rounding, and differ
   * from the frozen encoder's: the adapter was applied, and as ltdi does. */
  uint8_t *pe = NULL;
  size_t pn = 0;
  file_bytes(embp, &pe, &pn);
  cr_assert_eq(pn, (size_t)nq * g_dim * sizeof(float));
  const float *pf = (const float *)pe;
  size_t qlen[10];
  for (int i = 0; i < nq; i++) qlen[i] = strlen(Q[i]);
  cr_assert_eq(ltdi_bert_embed_texts(L.bert, L.tok, Q, qlen, nq, g_maxlen, 64, frozen, NULL), 0);
  double worst = 0, moved = 0;
  for (int i = 0; i < nq * g_dim; i++) {
    worst = fmax(worst, fabs((double)pf[i] - qemb[i]));
    moved = fmax(moved, fabs((double)frozen[i] - qemb[i]));
  }
  cr_expect_lt(worst, 1e-4, "PEFT's adapted embeddings differ from ltdi's by %g", worst);
  cr_expect_gt(moved, 1e-3, "the adapter does not change the embeddings (%g)", moved);
  cr_log_info("PEFT %d/%d, ltdi %d/%d; embeddings within %.2g, moved %.2g by the adapter",
              peft_right, nq, right, nq, worst, moved);
  free(pe);
  cr_expect_eq(peft_right, right, "PEFT scores %d/%d, ltdi %d/%d", peft_right, nq, right, nq);
  ltdi_lora_free(l);
  local_close(&L);
  free(r.body), free(body);
  world_stop(&w);
}

Test(server_lora, peft_scores_the_served_adapter_as_ltdi_does) {
  char py[400];
  if (!have_peft(py, sizeof py)) cr_skip_test("no .venv-ref with peft and transformers");
  world w;
  world_files(&w);
  peft_check(&w, py);
  tb_tmpdir_remove(w.dir);
}

/* The same with the real all-MiniLM-L6-v2 of .venv-ref/encoder (loaded by
 * PEFT with AutoModel.from_pretrained, as a user would). */
Test(server_lora, peft_scores_a_minilm_adapter_as_ltdi_does) {
  char py[400], enc[280], probe[500];
  snprintf(enc, sizeof enc, "%s/.venv-ref/encoder", LTDI_SOURCE_DIR);
  snprintf(probe, sizeof probe, "%s/model.safetensors", enc);
  if (!have_peft(py, sizeof py) || access(probe, R_OK))
    cr_skip_test("no .venv-ref with peft, transformers and the MiniLM encoder");
  world w;
  memset(&w, 0, sizeof w);
  tb_tmpdir_make(w.dir, "serve_lora_minilm");
  snprintf(w.enc, sizeof w.enc, "%s", enc);
  snprintf(w.adapters, sizeof w.adapters, "%s/adapters", w.dir);
  cr_assert_eq(mkdir(w.adapters, 0755), 0);
  char p[400];
  snprintf(p, sizeof p, "%s/lora.safetensors", w.dir);
  write_model(p, w.enc, 5);
  ltdi_bert_config bc;
  char err[256];
  cr_assert_eq(ltdi_bert_config_read(enc, &bc, err, sizeof err), 0, "%s", err);
  g_dim = bc.hidden_size, g_maxlen = 64;
  cr_assert_leq(g_dim, DIM_MAX);
  peft_check(&w, py);
  tb_tmpdir_remove(w.dir);
}
