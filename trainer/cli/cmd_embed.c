/* trainer/cli/cmd_embed.c — `ltdi-train embed`: one sentence embedding per
 * line of a UTF-8 text file, from a BERT-family encoder folder
 * (core/text/bert.h: mean pooling, L2-normalised; all-MiniLM-L6-v2's
 * recipe), written as safetensors `embeddings` [n, hidden] F32 in line
 * order. Lines are batched by token count (core/text/bert_embed.c), so the
 * output of a line does not depend on its neighbours beyond float rounding.
 *
 * Every line must hold text: an empty line or one that is not valid UTF-8
 * is an error naming the file and the line (a line may end in "\r\n"; a
 * last line without a newline counts). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "core/text/bert.h"
#include "core/text/tokenizer.h"
#include "trainer/cli/cli_device.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/options.h"
#include "trainer/common/progress.h"

typedef struct embed_args {
  const char *encoder, *text, *out, *device;
  int max_length, batch, threads;
} embed_args;

static void embed_defaults(void *p) {
  embed_args *a = p;
  memset(a, 0, sizeof *a);
  a->max_length = 0; /* 128, or the encoder's max_position_embeddings if fewer */
  a->batch = 32;
  a->threads = 1;
}

static const ltdi_opt EMBED_OPTS[] = {
    LTDI_OPT_STRING("--encoder", embed_args, encoder, "DIR", NULL,
                    "BERT folder: config.json, model.safetensors, vocab.txt (required)"),
    LTDI_OPT_STRING("--text", embed_args, text, "FILE", NULL,
                    "UTF-8 text, one sentence per line (required)"),
    LTDI_OPT_STRING("--out", embed_args, out, "FILE", NULL,
                    "safetensors file to write: embeddings [n, hidden] F32 (required)"),
    LTDI_OPT_INT("--max-length", embed_args, max_length, 2, 8192, "N",
                 "128, or max_position_embeddings if fewer",
                 "tokens per sentence with [CLS] and [SEP]; longer ones are cut\n"
                 "(at most the encoder's max_position_embeddings)"),
    LTDI_OPT_INT("--batch", embed_args, batch, 1, 4096, "B", NULL, "sentences per forward"),
    LTDI_OPT_INT("--threads", embed_args, threads, 1, 256, "T", NULL,
                 "BLAS threads of the CPU backend"),
    LTDI_OPT_STRING("--device", embed_args, device, "D", "$LTDI_DEVICE, else auto",
                    "auto | cpu | cuda (auto = CUDA when a GPU is usable)"),
};

static const ltdi_cli EMBED_CLI = {
    .name = "embed",
    .synopsis = "usage: ltdi-train embed --encoder DIR --text FILE --out FILE [options]\n"
                "\n"
                "Writes the sentence embedding (mean-pooled, L2-normalised) of every line of\n"
                "FILE as safetensors `embeddings` [n, hidden] F32, in line order.\n",
    .opts = EMBED_OPTS,
    .n_opts = LTDI_OPT_COUNT(EMBED_OPTS),
    .args_size = sizeof(embed_args),
    .defaults = embed_defaults,
};

/* The lines of a text file, pointing into its bytes (which the caller keeps). */
typedef struct lines {
  uint8_t *bytes;
  const char **text; /* (n) */
  size_t *len;       /* (n) bytes, without the line end */
  int n;
} lines;

static void lines_free(lines *l) {
  free(l->bytes);
  free(l->text);
  free(l->len);
  memset(l, 0, sizeof *l);
}

/* Splits `path` into lines; an empty line is an error naming its number. */
static int read_lines(const char *path, lines *l, char *err, size_t errlen) {
  memset(l, 0, sizeof *l);
  size_t nbytes = 0;
  int rc = ltdi_file_read(path, &l->bytes, &nbytes, err, errlen);
  if (rc) return rc;
  size_t cap = 0;
  for (size_t pos = 0; pos < nbytes;) {
    const uint8_t *nl = memchr(l->bytes + pos, '\n', nbytes - pos);
    size_t end = nl ? (size_t)(nl - l->bytes) : nbytes, len = end - pos;
    if (len > 0 && l->bytes[pos + len - 1] == '\r') len--;
    if (len == 0)
      return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s:%d: empty line", path, l->n + 1);
    if (l->n == 1 << 30) return ltdi_fail(err, errlen, LTDI_ERR_OVERFLOW, "%s: too many lines", path);
    if ((size_t)l->n == cap) {
      cap = cap ? 2 * cap : 1024;
      const char **t = realloc(l->text, cap * sizeof *t);
      if (t) l->text = t;
      size_t *n = realloc(l->len, cap * sizeof *n);
      if (n) l->len = n;
      if (!t || !n) return LTDI_ERR_NOMEM;
    }
    l->text[l->n] = (const char *)l->bytes + pos;
    l->len[l->n] = len;
    l->n++;
    pos = end + 1;
  }
  if (l->n == 0) return ltdi_fail(err, errlen, LTDI_ERR_FORMAT, "%s: no lines", path);
  return 0;
}

static int write_embeddings(const char *path, const float *emb, int n, int C,
                            const embed_args *a) {
  ltdi_st_writer *w = NULL;
  int rc = ltdi_st_writer_new(&w);
  const int64_t shape[2] = {n, C};
  char ml[16];
  snprintf(ml, sizeof ml, "%d", a->max_length);
  if (!rc) rc = ltdi_st_writer_add(w, "embeddings", LTDI_DTYPE_F32, 2, shape, emb);
  if (!rc) rc = ltdi_st_writer_meta(w, "encoder", a->encoder);
  if (!rc) rc = ltdi_st_writer_meta(w, "pooling", "mean over tokens, L2-normalised");
  if (!rc) rc = ltdi_st_writer_meta(w, "max_length", ml);
  if (!rc) {
    ltdi_st_writer_set_checksum(w, 1);
    rc = ltdi_st_writer_write(w, path);
  }
  ltdi_st_writer_free(w);
  return rc;
}

int ltdi_cmd_embed(int argc, char **argv) {
  embed_args a;
  embed_defaults(&a);
  int st = ltdi_cli_parse(&EMBED_CLI, &a, argc, argv);
  if (st != LTDI_CLI_RUN) return st;
  if (!a.encoder || !a.text || !a.out)
    return ltdi_cli_usage_error(&EMBED_CLI, "--encoder, --text and --out are required");
  ltdi_device want;
  if (ltdi_cli_device("embed", a.device, &want)) return 2;
  const double start = ltdi_now_s();
  char err[1024] = "";
  lines text;
  int rc = read_lines(a.text, &text, err, sizeof err);
  if (rc) {
    fprintf(stderr, "embed: %s\n", err[0] ? err : ltdi_strerror(rc));
    lines_free(&text);
    return 1;
  }
  ltdi_backend *be = NULL;
  if (ltdi_cli_backend_open("embed", want, a.threads, &be)) {
    lines_free(&text);
    return 1;
  }
  ltdi_bert *m = NULL;
  ltdi_tokenizer *tok = NULL;
  float *emb = NULL;
  rc = ltdi_bert_open(&m, be, a.encoder, err, sizeof err);
  if (!rc) rc = ltdi_bert_tokenizer_open(&tok, a.encoder, err, sizeof err);
  if (!rc && a.max_length == 0)
    a.max_length = ltdi_bert_config_of(m)->max_position < 128
                       ? ltdi_bert_config_of(m)->max_position
                       : 128;
  if (!rc && a.max_length > ltdi_bert_config_of(m)->max_position)
    rc = ltdi_fail(err, sizeof err, LTDI_ERR_INVALID_ARG,
                   "--max-length %d is past the encoder's max_position_embeddings %d",
                   a.max_length, ltdi_bert_config_of(m)->max_position);
  const int C = m ? ltdi_bert_config_of(m)->hidden_size : 0;
  if (!rc && !(emb = malloc((size_t)text.n * C * sizeof *emb))) rc = LTDI_ERR_NOMEM;
  if (!rc) {
    int bad = -1;
    rc = ltdi_bert_embed_texts(m, tok, text.text, text.len, text.n, a.max_length, a.batch, emb,
                               &bad);
    if (rc == LTDI_ERR_FORMAT && bad >= 0)
      ltdi_fail(err, sizeof err, rc, "%s:%d: not valid UTF-8 (or holds a NUL byte)", a.text,
                bad + 1);
    else if (rc)
      ltdi_fail(err, sizeof err, rc, "encoding %s failed: %s", a.text, ltdi_strerror(rc));
  }
  if (!rc) {
    rc = write_embeddings(a.out, emb, text.n, C, &a);
    if (rc) ltdi_fail(err, sizeof err, rc, "cannot write %s: %s", a.out, ltdi_strerror(rc));
  }
  if (rc)
    fprintf(stderr, "embed: %s\n", err[0] ? err : ltdi_strerror(rc));
  else
    printf("embed: %d lines, dim %d -> %s (%s, %.1f s)\n", text.n, C, a.out, be->name,
           ltdi_now_s() - start);
  free(emb);
  if (tok) ltdi_tokenizer_close(tok);
  ltdi_bert_free(m);
  ltdi_backend_destroy(be);
  lines_free(&text);
  return rc ? 1 : 0;
}
