/* core/class_denoiser_layout.c — the class-token denoiser's configuration,
 * parameter table, initialisation and memory.
 *
 * The layout is built by walking the architecture once in forward order
 * (core/class_denoiser.h): every parameter tensor gets its name, shape and
 * offset in ONE params buffer (and the same offset in the grads buffer),
 * every activation a per-task or per-row offset in the activation cache
 * (core/class_denoiser_internal.h). The forward and the backward only follow
 * these offsets. */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/class_denoiser_internal.h"
#include "core/rng.h"

/* ==== configuration ====================================================== */

void ltdi_cden_config_default(ltdi_cden_config *cfg, int token_dim, int cond_dim) {
  memset(cfg, 0, sizeof *cfg);
  cfg->token_dim = token_dim;
  cfg->cond_dim = cond_dim;
  cfg->width = 128;
  cfg->blocks = 2;
  cfg->time_dim = 64;
}

int ltdi_cden_config_check(const ltdi_cden_config *c) {
  if (c == NULL || c->token_dim <= 0 || c->cond_dim < 0 || c->width <= 0 || c->blocks < 1 ||
      c->blocks > LTDI_CDEN_MAX_BLOCKS || c->time_dim <= 0 || c->time_dim % 2 != 0)
    return LTDI_ERR_INVALID_ARG;
  /* Keep every size product far from int overflow (the backend takes ints). */
  if (c->token_dim > (1 << 16) || c->cond_dim > (1 << 16) || c->width > 8192 ||
      c->time_dim > 8192)
    return LTDI_ERR_INVALID_ARG;
  if (c->positions < 0 || c->positions > (1 << 16) || c->set_dim < 0 || c->set_dim > (1 << 16))
    return LTDI_ERR_INVALID_ARG;
  /* A task-level token is row 0 of every task; a position table names the
   * rows of a fixed token list, which has no such extra row. A condition
   * set (set_dim) combines with it: it only changes e. */
  if (c->set_token_dim < 0 || c->set_token_dim > (1 << 20) ||
      (int64_t)c->set_token_dim * c->width > (1 << 30) ||
      (c->set_token_dim > 0 && c->positions > 0))
    return LTDI_ERR_INVALID_ARG;
  return 0;
}

int ltdi_cden_config_to_json(const ltdi_cden_config *c, char *buf, size_t buflen) {
  if (c == NULL || buf == NULL) return LTDI_ERR_INVALID_ARG;
  /* The optional parts only when present, so a plain class-token config
   * reads as it always did. */
  char extra[96] = "";
  int used = 0;
  if (c->positions || c->set_dim)
    used = snprintf(extra, sizeof extra, ",\"positions\":%d,\"set_dim\":%d", c->positions,
                    c->set_dim);
  if (c->set_token_dim > 0 && used >= 0 && (size_t)used < sizeof extra)
    snprintf(extra + used, sizeof extra - (size_t)used, ",\"set_token_dim\":%d",
             c->set_token_dim);
  int n = snprintf(buf, buflen,
                   "{\"token_dim\":%d,\"cond_dim\":%d,\"width\":%d,\"blocks\":%d,"
                   "\"time_dim\":%d%s}",
                   c->token_dim, c->cond_dim, c->width, c->blocks, c->time_dim, extra);
  return (n < 0 || (size_t)n >= buflen) ? LTDI_ERR_OVERFLOW : 0;
}

static int json_int(json_t *obj, const char *key, int *out) {
  json_t *v = json_object_get(obj, key);
  if (!json_is_integer(v)) return LTDI_ERR_FORMAT;
  json_int_t x = json_integer_value(v);
  if (x < -(1 << 30) || x > (1 << 30)) return LTDI_ERR_FORMAT;
  *out = (int)x;
  return 0;
}

int ltdi_cden_config_from_json(const char *text, ltdi_cden_config *cfg) {
  if (text == NULL || cfg == NULL) return LTDI_ERR_INVALID_ARG;
  json_t *root = json_loads(text, 0, NULL);
  if (!json_is_object(root)) {
    json_decref(root);
    return LTDI_ERR_FORMAT;
  }
  ltdi_cden_config c;
  memset(&c, 0, sizeof c);
  int rc = json_int(root, "token_dim", &c.token_dim);
  rc = rc ? rc : json_int(root, "cond_dim", &c.cond_dim);
  rc = rc ? rc : json_int(root, "width", &c.width);
  rc = rc ? rc : json_int(root, "blocks", &c.blocks);
  rc = rc ? rc : json_int(root, "time_dim", &c.time_dim);
  if (!rc && json_object_get(root, "positions")) rc = json_int(root, "positions", &c.positions);
  if (!rc && json_object_get(root, "set_dim")) rc = json_int(root, "set_dim", &c.set_dim);
  if (!rc && json_object_get(root, "set_token_dim"))
    rc = json_int(root, "set_token_dim", &c.set_token_dim);
  json_decref(root);
  if (rc == 0) rc = ltdi_cden_config_check(&c);
  if (rc == 0) *cfg = c;
  return rc;
}

/* ==== layout ============================================================= */

typedef struct builder {
  ltdi_cden *net;
  int overflow;
} builder;

/* Appends the tensor prefix.name (or name alone when prefix is ""). */
static size_t add_param(builder *bd, const char *prefix, const char *name, int ndim, int64_t s0,
                        int64_t s1) {
  ltdi_cden *net = bd->net;
  if (net->n_tensors >= LTDI__CDEN_MAX_TENSORS) {
    bd->overflow = 1;
    return 0;
  }
  ltdi__cden_tdesc *t = &net->tensors[net->n_tensors++];
  int len = snprintf(t->name, sizeof t->name, "%s%s%s", prefix, prefix[0] ? "." : "", name);
  if (len < 0 || (size_t)len >= sizeof t->name) bd->overflow = 1; /* a name would be cut */
  t->ndim = ndim;
  t->shape[0] = s0;
  t->shape[1] = ndim > 1 ? s1 : 1;
  t->numel = (size_t)(t->shape[0] * t->shape[1]);
  t->offset = net->n_params;
  net->n_params += t->numel;
  return t->offset;
}

/* Where a layer's multiply-adds count. */
enum { PER_TASK, PER_ROW, PER_SET_ROW };

/* A linear layer `name` (out, in), with a bias unless pb is NULL; its
 * multiply-adds count per task, per row or per set row. */
static void lin_params(builder *bd, const char *prefix, const char *name, int out, int in,
                       size_t *pw, size_t *pb, int per) {
  char full[LTDI_CDEN_NAME_MAX];
  snprintf(full, sizeof full, "%s.weight", name);
  *pw = add_param(bd, prefix, full, 2, out, in);
  if (pb != NULL) {
    snprintf(full, sizeof full, "%s.bias", name);
    *pb = add_param(bd, prefix, full, 1, out, 0);
  }
  ltdi_cden *net = bd->net;
  *(per == PER_ROW ? &net->macs_per_row
                   : per == PER_SET_ROW ? &net->macs_per_set_row : &net->macs_per_task) +=
      (double)out * in;
}

static void norm_params(builder *bd, const char *prefix, const char *name, int ch, size_t *pw,
                        size_t *pb) {
  char full[LTDI_CDEN_NAME_MAX];
  snprintf(full, sizeof full, "%s.weight", name);
  *pw = add_param(bd, prefix, full, 1, ch, 0);
  snprintf(full, sizeof full, "%s.bias", name);
  *pb = add_param(bd, prefix, full, 1, ch, 0);
}

/* Activations of n floats per task / per row, rounded up to 16 floats so
 * every tensor of a cache starts 64-byte aligned. */
static size_t task_act(ltdi_cden *net, size_t n) {
  size_t off = net->act_per_task;
  net->act_per_task += (n + 15) / 16 * 16;
  return off;
}

static size_t row_act(ltdi_cden *net, size_t n) {
  size_t off = net->act_per_row;
  net->act_per_row += (n + 15) / 16 * 16;
  return off;
}

static size_t set_row_act(ltdi_cden *net, size_t n) {
  size_t off = net->act_per_set_row;
  net->act_per_set_row += (n + 15) / 16 * 16;
  return off;
}

static void add_block(builder *bd, ltdi__cden_block *k, int index, size_t r_in) {
  ltdi_cden *net = bd->net;
  const int H = net->cfg.width;
  char pre[16];
  snprintf(pre, sizeof pre, "block%d", index);
  lin_params(bd, pre, "film_scale", H, H, &k->p_fsw, &k->p_fsb, PER_TASK);
  lin_params(bd, pre, "film_shift", H, H, &k->p_fbw, &k->p_fbb, PER_TASK);
  norm_params(bd, pre, "norm", H, &k->p_nw, &k->p_nb);
  lin_params(bd, pre, "self", H, H, &k->p_sw, &k->p_sb, PER_ROW);
  lin_params(bd, pre, "pool", H, H, &k->p_pw, NULL, PER_TASK);
  lin_params(bd, pre, "out", H, H, &k->p_ow, &k->p_ob, PER_ROW);
  k->t_fs = task_act(net, (size_t)H);
  k->t_fb = task_act(net, (size_t)H);
  k->t_m = task_act(net, (size_t)H);
  k->t_pm = task_act(net, (size_t)H);
  k->r_in = r_in;
  k->r_hf = row_act(net, (size_t)H);
  k->r_g = row_act(net, (size_t)H);
  k->r_mu = row_act(net, 1);
  k->r_rs = row_act(net, 1);
  k->r_a = row_act(net, (size_t)H);
  k->r_s = row_act(net, (size_t)H);
  k->r_out = row_act(net, (size_t)H);
}

static int build(ltdi_cden *net) {
  builder bd = {net, 0};
  const ltdi_cden_config *c = &net->cfg;
  const int H = c->width, D = c->token_dim, d = c->cond_dim;
  lin_params(&bd, "", "in", H, D + d, &net->p_inw, &net->p_inb, PER_ROW);
  lin_params(&bd, "", "time", H, c->time_dim, &net->p_tw, &net->p_tb, PER_TASK);
  net->t_sin = task_act(net, (size_t)c->time_dim);
  net->t_te = task_act(net, (size_t)H);
  net->t_e = task_act(net, (size_t)H);
  net->r_xc = row_act(net, (size_t)(D + d));
  net->r_h0 = row_act(net, (size_t)H);
  size_t prev = net->r_h0;
  for (int k = 0; k < c->blocks; k++) {
    add_block(&bd, &net->blk[k], k, prev);
    prev = net->blk[k].r_out;
  }
  norm_params(&bd, "", "final_norm", H, &net->p_fnw, &net->p_fnb);
  lin_params(&bd, "", "out", D, H, &net->p_ow, &net->p_ob, PER_ROW);
  net->r_gf = row_act(net, (size_t)H);
  net->r_fmu = row_act(net, 1);
  net->r_frs = row_act(net, 1);
  /* The optional parts come last, so a plain class-token net keeps its
   * offsets and its initialisation draws. */
  if (c->positions > 0) net->p_pos = add_param(&bd, "", "pos.weight", 2, c->positions, H);
  if (c->set_dim > 0) {
    lin_params(&bd, "", "set_in", H, c->set_dim, &net->p_siw, &net->p_sib, PER_SET_ROW);
    lin_params(&bd, "", "set_out", H, H, &net->p_sow, &net->p_sob, PER_TASK);
    net->t_sv = task_act(net, (size_t)H);
    net->t_sg = task_act(net, (size_t)H);
    net->s_in = set_row_act(net, (size_t)c->set_dim);
    net->s_pre = set_row_act(net, (size_t)H);
    net->s_u = set_row_act(net, (size_t)H);
  }
  const int Ds = c->set_token_dim;
  if (Ds > 0) {
    lin_params(&bd, "", "set_token_in", H, Ds, &net->p_tiw, &net->p_tib, PER_TASK);
    lin_params(&bd, "", "set_token_out", Ds, H, &net->p_tow, &net->p_tob, PER_TASK);
    /* the set row's trip through every block's self and out layers */
    net->macs_per_task += (double)c->blocks * 2.0 * H * H;
    net->t_xs = task_act(net, (size_t)Ds);
    net->t_hs = task_act(net, (size_t)H);
    net->t_gs = task_act(net, (size_t)H);
    net->t_es = task_act(net, (size_t)Ds);
    /* without a condition the class part of x_t IS the in-layer's input */
    net->r_xt = d > 0 ? row_act(net, (size_t)D) : net->r_xc;
    net->r_hc = row_act(net, (size_t)H);
    net->r_gc = row_act(net, (size_t)H);
    net->r_ec = row_act(net, (size_t)D);
  }
  return bd.overflow ? LTDI_ERR_OVERFLOW : 0;
}

/* ==== model ============================================================== */

int ltdi_cden_create(ltdi_cden **out, ltdi_backend *be, const ltdi_cden_config *cfg) {
  if (out == NULL || be == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  int rc = ltdi_cden_config_check(cfg);
  if (rc) return rc;
  ltdi_cden *net = calloc(1, sizeof *net);
  if (net == NULL) return LTDI_ERR_NOMEM;
  net->be = be;
  net->cfg = *cfg;
  rc = build(net);
  if (rc == 0) {
    net->params = be->alloc(be, net->n_params * sizeof(float));
    net->grads = be->alloc(be, net->n_params * sizeof(float));
    if (net->params == NULL || net->grads == NULL) rc = LTDI_ERR_NOMEM;
  }
  if (rc) {
    ltdi_cden_free(net);
    return rc;
  }
  *out = net;
  return 0;
}

void ltdi_cden_free(ltdi_cden *net) {
  if (net == NULL) return;
  if (net->params) net->be->free(net->be, net->params);
  if (net->grads) net->be->free(net->be, net->grads);
  free(net);
}

/* The tensors are drawn in buffer order from one Philox stream; a bias
 * follows its weight and shares its fan-in (pool has no bias). */
int ltdi_cden_init(ltdi_cden *net, uint64_t seed) {
  if (net == NULL) return LTDI_ERR_INVALID_ARG;
  float *host = malloc(net->n_params * sizeof *host);
  if (host == NULL) return LTDI_ERR_NOMEM;
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0x6364656eu /* "cden" */);
  double bound = 0.0; /* of the last weight seen */
  for (int i = 0; i < net->n_tensors; i++) {
    const ltdi__cden_tdesc *t = &net->tensors[i];
    float *p = host + t->offset;
    const int is_bias = strstr(t->name, ".bias") != NULL;
    if (strncmp(t->name, "out.", 4) == 0 || strncmp(t->name, "set_token_out.", 14) == 0) {
      memset(p, 0, t->numel * sizeof *p); /* initial prediction exactly 0 */
      continue;
    }
    if (strstr(t->name, "norm") != NULL) {
      for (size_t j = 0; j < t->numel; j++) p[j] = is_bias ? 0.0f : 1.0f;
      continue;
    }
    if (!is_bias) bound = 1.0 / sqrt((double)t->shape[1]);
    for (size_t j = 0; j < t->numel; j++)
      p[j] = (float)((2.0 * ltdi_rng_uniform(&rng) - 1.0) * bound);
  }
  int rc = net->be->upload(net->be, net->params, host, net->n_params * sizeof *host);
  free(host);
  return rc;
}

const ltdi_cden_config *ltdi_cden_config_of(const ltdi_cden *net) { return &net->cfg; }
size_t ltdi_cden_num_params(const ltdi_cden *net) { return net->n_params; }
float *ltdi_cden_params(ltdi_cden *net) { return net->params; }
float *ltdi_cden_grads(ltdi_cden *net) { return net->grads; }

int ltdi_cden_zero_grad(ltdi_cden *net) {
  if (net == NULL) return LTDI_ERR_INVALID_ARG;
  return net->be->fill(net->be, net->grads, 0.0f, net->n_params);
}

int ltdi_cden_num_tensors(const ltdi_cden *net) { return net->n_tensors; }

int ltdi_cden_tensor_at(const ltdi_cden *net, int i, ltdi_cden_tensor *t) {
  if (net == NULL || t == NULL || i < 0 || i >= net->n_tensors) return LTDI_ERR_INVALID_ARG;
  const ltdi__cden_tdesc *d = &net->tensors[i];
  t->name = d->name;
  t->ndim = d->ndim;
  t->shape[0] = d->shape[0];
  t->shape[1] = d->ndim > 1 ? d->shape[1] : 1;
  t->offset = d->offset;
  t->numel = d->numel;
  t->param = net->params + d->offset;
  t->grad = net->grads + d->offset;
  return 0;
}

int ltdi_cden_tensor_find(const ltdi_cden *net, const char *name) {
  if (net == NULL || name == NULL) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < net->n_tensors; i++)
    if (strcmp(net->tensors[i].name, name) == 0) return i;
  return LTDI_ERR_NOT_FOUND;
}

double ltdi_cden_forward_flops(const ltdi_cden *net, int tasks, int rows) {
  if (net == NULL || tasks < 0 || rows < 0) return 0.0;
  return net->macs_per_task * tasks + net->macs_per_row * rows;
}

double ltdi_cden_forward_flops_set(const ltdi_cden *net, int tasks, int rows, int set_rows) {
  if (net == NULL || set_rows < 0) return 0.0;
  return ltdi_cden_forward_flops(net, tasks, rows) + net->macs_per_set_row * set_rows;
}

/* ==== activation cache =================================================== */

/* ∂x_t's floats: the class rows, then one set token per task. */
static size_t dx_floats(const ltdi_cden_acts *a) {
  return (size_t)a->max_rows * (size_t)a->net->cfg.token_dim +
         (size_t)a->max_tasks * (size_t)a->net->cfg.set_token_dim;
}

static int acts_create(ltdi_cden_acts **out, const ltdi_cden *net, int max_tasks, int max_rows,
                       int max_set_rows, int grads) {
  if (out == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  if (net == NULL || max_tasks <= 0 || max_rows <= 0 || max_set_rows < 0 ||
      (net->cfg.set_dim > 0 && max_set_rows == 0))
    return LTDI_ERR_INVALID_ARG;
  const size_t cap = ((size_t)1 << 40) / sizeof(float);
  /* the task-level token adds one row per task to the per-row region */
  const int Ds = net->cfg.set_token_dim;
  if (Ds > 0 && max_tasks > INT_MAX - max_rows) return LTDI_ERR_OVERFLOW;
  const int row_cap = max_rows + (Ds > 0 ? max_tasks : 0);
  if (net->act_per_task > cap / 3 / (size_t)max_tasks ||
      net->act_per_row > cap / 3 / (size_t)row_cap ||
      (max_set_rows > 0 && net->act_per_set_row > cap / 3 / (size_t)max_set_rows))
    return LTDI_ERR_OVERFLOW;
  ltdi_cden_acts *a = calloc(1, sizeof *a);
  if (a == NULL) return LTDI_ERR_NOMEM;
  ltdi_backend *be = net->be;
  a->be = be;
  a->net = net;
  a->max_tasks = max_tasks;
  a->max_rows = max_rows;
  a->row_cap = row_cap;
  a->max_set_rows = net->cfg.set_dim > 0 ? max_set_rows : 0;
  const size_t n = ltdi__cden_acts_floats(a);
  a->act = be->alloc(be, n * sizeof(float));
  int ok = a->act != NULL;
  if (grads) {
    a->dact = be->alloc(be, n * sizeof(float));
    a->dx = be->alloc(be, dx_floats(a) * sizeof(float));
    /* cond_dim may be 0: a one-float buffer keeps the pointer valid */
    const size_t dcond_n = (size_t)max_rows * net->cfg.cond_dim;
    a->dcond = be->alloc(be, (dcond_n ? dcond_n : 1) * sizeof(float));
    ok = ok && a->dact != NULL && a->dx != NULL && a->dcond != NULL;
  } else if (net->cfg.set_dim == 0) {
    a->tcache = be->alloc(be, LTDI_CDEN_TIME_CACHE * ltdi__cden_tcache_entry(net) * sizeof(float));
    ok = ok && a->tcache != NULL;
  }
  for (int i = 0; i < LTDI_CDEN_TIME_CACHE; i++) a->tcache_t[i] = -1;
  if (!ok) {
    ltdi_cden_acts_free(a);
    return LTDI_ERR_NOMEM;
  }
  *out = a;
  return 0;
}

int ltdi_cden_acts_create(ltdi_cden_acts **out, const ltdi_cden *net, int max_tasks,
                          int max_rows) {
  return acts_create(out, net, max_tasks, max_rows, 0, 1);
}

int ltdi_cden_acts_create_inference(ltdi_cden_acts **out, const ltdi_cden *net, int max_tasks,
                                    int max_rows) {
  return acts_create(out, net, max_tasks, max_rows, 0, 0);
}

int ltdi_cden_acts_create_set(ltdi_cden_acts **out, const ltdi_cden *net, int max_tasks,
                              int max_rows, int max_set_rows, int with_grads) {
  return acts_create(out, net, max_tasks, max_rows, max_set_rows, with_grads != 0);
}

void ltdi_cden_acts_free(ltdi_cden_acts *a) {
  if (a == NULL) return;
  if (a->act) a->be->free(a->be, a->act);
  if (a->dact) a->be->free(a->be, a->dact);
  if (a->dx) a->be->free(a->be, a->dx);
  if (a->dcond) a->be->free(a->be, a->dcond);
  if (a->tcache) a->be->free(a->be, a->tcache);
  free(a);
}

/* Activations, plus their gradients and the two input gradients unless the
 * cache is inference-only. */
size_t ltdi_cden_acts_size(const ltdi_cden_acts *a) {
  if (a == NULL) return 0;
  const ltdi_cden *net = a->net;
  const size_t n = ltdi__cden_acts_floats(a);
  if (a->dact == NULL)
    return n + (a->tcache ? LTDI_CDEN_TIME_CACHE * ltdi__cden_tcache_entry(net) : 0);
  return 2 * n + dx_floats(a) + (size_t)a->max_rows * (size_t)net->cfg.cond_dim;
}

const float *ltdi_cden_acts_dx(const ltdi_cden_acts *a) { return a == NULL ? NULL : a->dx; }
const float *ltdi_cden_acts_dcond(const ltdi_cden_acts *a) {
  return a == NULL ? NULL : a->dcond;
}
