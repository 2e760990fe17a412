/* core/unet_layout.c — the U-Net's configuration, parameter table and memory.
 *
 * The layout is built by walking the architecture once in forward order:
 * every parameter tensor gets a name, a shape and an offset in ONE params
 * buffer (and the same offset in the grads buffer), every activation a
 * per-sample offset in the activation cache. The forward and backward in
 * unet_forward.c / unet_backward.c only follow these offsets. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "core/unet_internal.h"

/* ==== configuration ====================================================== */

void ltdi_unet_config_default(ltdi_unet_config *cfg, int n_params, int cond_dim) {
  memset(cfg, 0, sizeof *cfg);
  cfg->n_params = n_params;
  cfg->token = 64;
  cfg->base_ch = 32;
  cfg->n_levels = 3;
  cfg->mult[0] = 1;
  cfg->mult[1] = 2;
  cfg->mult[2] = 2;
  cfg->groups = 8;
  cfg->time_dim = 64;
  cfg->emb_dim = 128;
  cfg->cond_dim = cond_dim;
  cfg->kernel = 3;
  cfg->cond_map = 1;
}

int ltdi_unet_config_check(const ltdi_unet_config *c) {
  if (c == NULL || c->n_params <= 0 || c->token <= 0 || c->base_ch <= 0 ||
      c->n_levels < 1 || c->n_levels > LTDI_UNET_MAX_LEVELS || c->groups <= 0 ||
      c->time_dim <= 0 || c->time_dim % 2 != 0 || c->emb_dim <= 0 || c->cond_dim <= 0 ||
      c->kernel <= 0 || c->kernel % 2 == 0 || c->cond_map < 0 || c->cond_map > 1)
    return LTDI_ERR_INVALID_ARG;
  /* Keep every size product far from int overflow (the backend takes ints). */
  if (c->n_params > (1 << 24) || c->token > 4096 || c->base_ch > 4096 || c->kernel > 15 ||
      c->time_dim > 8192 || c->emb_dim > 8192 || c->cond_dim > (1 << 20))
    return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < c->n_levels; i++) {
    if (c->mult[i] <= 0 || c->mult[i] > 16) return LTDI_ERR_INVALID_ARG;
    /* Every group-norm sees ch_i, and the up blocks ch_i + ch_{i+1} or
     * 2 ch_last: with groups | ch_i for all i all of these are divisible. */
    if ((c->base_ch * c->mult[i]) % c->groups != 0) return LTDI_ERR_INVALID_ARG;
  }
  return 0;
}

int ltdi_unet_config_length(const ltdi_unet_config *c) {
  if (ltdi_unet_config_check(c) != 0) return 0;
  const int m = 1 << (c->n_levels - 1);
  int L = (c->n_params + c->token - 1) / c->token;
  return (L + m - 1) / m * m;
}

int ltdi_unet_config_to_json(const ltdi_unet_config *c, char *buf, size_t buflen) {
  if (c == NULL || buf == NULL) return LTDI_ERR_INVALID_ARG;
  char mult[64] = "";
  size_t off = 0;
  for (int i = 0; i < c->n_levels && i < LTDI_UNET_MAX_LEVELS; i++)
    off += (size_t)snprintf(mult + off, sizeof mult - off, "%s%d", i ? "," : "", c->mult[i]);
  int n = snprintf(buf, buflen,
                   "{\"n_params\":%d,\"token\":%d,\"base_ch\":%d,\"n_levels\":%d,"
                   "\"mult\":[%s],\"groups\":%d,\"time_dim\":%d,\"emb_dim\":%d,"
                   "\"cond_dim\":%d,\"kernel\":%d,\"cond_map\":%d}",
                   c->n_params, c->token, c->base_ch, c->n_levels, mult, c->groups,
                   c->time_dim, c->emb_dim, c->cond_dim, c->kernel, c->cond_map);
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

int ltdi_unet_config_from_json(const char *text, ltdi_unet_config *cfg) {
  if (text == NULL || cfg == NULL) return LTDI_ERR_INVALID_ARG;
  json_t *root = json_loads(text, 0, NULL);
  if (!json_is_object(root)) {
    json_decref(root);
    return LTDI_ERR_FORMAT;
  }
  ltdi_unet_config c;
  memset(&c, 0, sizeof c);
  int rc = 0;
  rc = rc ? rc : json_int(root, "n_params", &c.n_params);
  rc = rc ? rc : json_int(root, "token", &c.token);
  rc = rc ? rc : json_int(root, "base_ch", &c.base_ch);
  rc = rc ? rc : json_int(root, "n_levels", &c.n_levels);
  rc = rc ? rc : json_int(root, "groups", &c.groups);
  rc = rc ? rc : json_int(root, "time_dim", &c.time_dim);
  rc = rc ? rc : json_int(root, "emb_dim", &c.emb_dim);
  rc = rc ? rc : json_int(root, "cond_dim", &c.cond_dim);
  rc = rc ? rc : json_int(root, "kernel", &c.kernel);
  /* Absent in files written before position-wise conditioning existed:
   * those models have no cond_map tensors. */
  if (rc == 0 && json_object_get(root, "cond_map") != NULL)
    rc = json_int(root, "cond_map", &c.cond_map);
  json_t *mult = json_object_get(root, "mult");
  if (rc == 0 && (!json_is_array(mult) || c.n_levels < 1 ||
                  c.n_levels > LTDI_UNET_MAX_LEVELS ||
                  json_array_size(mult) != (size_t)c.n_levels))
    rc = LTDI_ERR_FORMAT;
  for (int i = 0; rc == 0 && i < c.n_levels; i++) {
    json_t *v = json_array_get(mult, (size_t)i);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1024)
      rc = LTDI_ERR_FORMAT;
    else
      c.mult[i] = (int)json_integer_value(v);
  }
  json_decref(root);
  if (rc == 0) rc = ltdi_unet_config_check(&c);
  if (rc == 0) *cfg = c;
  return rc;
}

/* ==== layout ============================================================= */

typedef struct builder {
  ltdi_unet *u;
  int overflow;
} builder;

/* Appends a parameter tensor named prefix + "." + name; returns its offset. */
static size_t add_param(builder *bd, const char *prefix, const char *name, int ndim,
                        int64_t s0, int64_t s1, int64_t s2) {
  ltdi_unet *u = bd->u;
  if (u->n_tensors >= LTDI__UNET_MAX_TENSORS) {
    bd->overflow = 1;
    return 0;
  }
  ltdi__unet_tdesc *t = &u->tensors[u->n_tensors++];
  int len = snprintf(t->name, sizeof t->name, "%s%s%s", prefix, prefix[0] ? "." : "", name);
  if (len < 0 || (size_t)len >= sizeof t->name) bd->overflow = 1; /* a name would be cut */
  t->ndim = ndim;
  t->shape[0] = s0;
  t->shape[1] = ndim > 1 ? s1 : 1;
  t->shape[2] = ndim > 2 ? s2 : 1;
  t->numel = (size_t)(t->shape[0] * t->shape[1] * t->shape[2]);
  t->offset = u->n_params;
  u->n_params += t->numel;
  return t->offset;
}

/* Reserves a per-sample activation of n floats, rounded up to 16 floats so
 * every tensor of a cache starts 64-byte aligned whatever max_batch is. */
static size_t add_act(ltdi_unet *u, size_t n) {
  size_t off = u->act_per_sample;
  u->act_per_sample += (n + 15) / 16 * 16;
  return off;
}

static void conv_params(builder *bd, const char *prefix, const char *name, int out, int in,
                        int k, size_t *pw, size_t *pb) {
  char full[LTDI_UNET_NAME_MAX];
  snprintf(full, sizeof full, "%s.weight", name);
  *pw = add_param(bd, prefix, full, 3, out, in, k);
  snprintf(full, sizeof full, "%s.bias", name);
  *pb = add_param(bd, prefix, full, 1, out, 0, 0);
}

static void lin_params(builder *bd, const char *prefix, const char *name, int out, int in,
                       size_t *pw, size_t *pb) {
  char full[LTDI_UNET_NAME_MAX];
  snprintf(full, sizeof full, "%s.weight", name);
  *pw = add_param(bd, prefix, full, 2, out, in, 0);
  snprintf(full, sizeof full, "%s.bias", name);
  *pb = add_param(bd, prefix, full, 1, out, 0, 0);
  bd->u->macs_per_sample += (double)out * in;
}

static void norm_params(builder *bd, const char *prefix, const char *name, int ch, size_t *pw,
                        size_t *pb) {
  char full[LTDI_UNET_NAME_MAX];
  snprintf(full, sizeof full, "%s.weight", name);
  *pw = add_param(bd, prefix, full, 1, ch, 0, 0);
  snprintf(full, sizeof full, "%s.bias", name);
  *pb = add_param(bd, prefix, full, 1, ch, 0, 0);
}

static void add_res(builder *bd, ltdi__unet_res *r, const char *prefix, int in, int out,
                    int len, size_t a_in) {
  ltdi_unet *u = bd->u;
  const int k = u->cfg.kernel, G = u->cfg.groups;
  r->in_ch = in;
  r->out_ch = out;
  r->len = len;
  r->a_in = a_in;
  norm_params(bd, prefix, "norm1", in, &r->p_n1w, &r->p_n1b);
  conv_params(bd, prefix, "conv1", out, in, k, &r->p_c1w, &r->p_c1b);
  lin_params(bd, prefix, "emb_proj", out, u->cfg.emb_dim, &r->p_ew, &r->p_eb);
  norm_params(bd, prefix, "norm2", out, &r->p_n2w, &r->p_n2b);
  conv_params(bd, prefix, "conv2", out, out, k, &r->p_c2w, &r->p_c2b);
  u->macs_per_sample += (double)len * out * k * (in + out);
  if (in != out) {
    conv_params(bd, prefix, "skip", out, in, 1, &r->p_skw, &r->p_skb);
    u->macs_per_sample += (double)len * out * in;
  } else {
    r->p_skw = r->p_skb = LTDI__UNET_NONE;
  }
  const size_t nin = (size_t)in * len, nout = (size_t)out * len;
  r->a_n1 = add_act(u, nin);
  r->a_s1 = add_act(u, nin);
  r->a_m1 = add_act(u, (size_t)G);
  r->a_r1 = add_act(u, (size_t)G);
  r->a_h1 = add_act(u, nout);
  r->a_ep = add_act(u, (size_t)out);
  r->a_n2 = add_act(u, nout);
  r->a_s2 = add_act(u, nout);
  r->a_m2 = add_act(u, (size_t)G);
  r->a_r2 = add_act(u, (size_t)G);
  r->a_sk = in != out ? add_act(u, nout) : LTDI__UNET_NONE;
  r->a_out = add_act(u, nout);
}

static int build(ltdi_unet *u) {
  builder bd = {u, 0};
  const ltdi_unet_config *c = &u->cfg;
  const int n = c->n_levels, k = c->kernel, S = c->token, C0 = c->base_ch;
  char pre[32];
  u->len = ltdi_unet_config_length(c);
  for (int i = 0; i < n; i++) {
    u->ch[i] = C0 * c->mult[i];
    u->lvl_len[i] = u->len >> i;
  }

  /* embeddings */
  lin_params(&bd, "time_embed", "lin1", c->emb_dim, c->time_dim, &u->p_t1w, &u->p_t1b);
  lin_params(&bd, "time_embed", "lin2", c->emb_dim, c->emb_dim, &u->p_t2w, &u->p_t2b);
  lin_params(&bd, "", "cond_proj", c->emb_dim, c->cond_dim, &u->p_cw, &u->p_cb);
  u->a_x = add_act(u, (size_t)S * u->len);
  u->a_sin = add_act(u, (size_t)c->time_dim);
  u->a_cin = add_act(u, (size_t)c->cond_dim);
  u->a_t1 = add_act(u, (size_t)c->emb_dim);
  u->a_t1s = add_act(u, (size_t)c->emb_dim);
  u->a_c = add_act(u, (size_t)c->emb_dim);
  u->a_e = add_act(u, (size_t)c->emb_dim);
  u->a_es = add_act(u, (size_t)c->emb_dim);

  const int in_ch = c->cond_map ? 2 * S : S;
  u->p_mw = u->p_mb = u->p_gw = u->p_gb = LTDI__UNET_NONE;
  u->a_m = u->a_xm = u->a_g = LTDI__UNET_NONE;
  if (c->cond_map) {
    lin_params(&bd, "", "cond_map", S * u->len, c->cond_dim, &u->p_mw, &u->p_mb);
    u->a_m = add_act(u, (size_t)S * u->len);
    u->a_xm = add_act(u, (size_t)in_ch * u->len);
  }
  conv_params(&bd, "", "in_conv", C0, in_ch, k, &u->p_inw, &u->p_inb);
  u->macs_per_sample += (double)u->len * C0 * in_ch * k;
  u->a_h0 = add_act(u, (size_t)C0 * u->len);

  /* encoder */
  size_t prev = u->a_h0;
  int prev_ch = C0;
  for (int i = 0; i < n; i++) {
    snprintf(pre, sizeof pre, "down%d.res0", i);
    add_res(&bd, &u->down[i], pre, prev_ch, u->ch[i], u->lvl_len[i], prev);
    prev = u->down[i].a_out;
    prev_ch = u->ch[i];
    if (i < n - 1) {
      snprintf(pre, sizeof pre, "down%d", i);
      conv_params(&bd, pre, "down", u->ch[i], u->ch[i], k, &u->p_dsw[i], &u->p_dsb[i]);
      u->macs_per_sample += (double)u->lvl_len[i + 1] * u->ch[i] * u->ch[i] * k;
      u->a_ds[i] = add_act(u, (size_t)u->ch[i] * u->lvl_len[i + 1]);
      prev = u->a_ds[i];
    }
  }
  add_res(&bd, &u->mid, "mid.res0", prev_ch, prev_ch, u->lvl_len[n - 1], prev);
  prev = u->mid.a_out;

  /* decoder */
  for (int i = n - 1; i >= 0; i--) {
    u->a_cat[i] = add_act(u, (size_t)(prev_ch + u->ch[i]) * u->lvl_len[i]);
    snprintf(pre, sizeof pre, "up%d.res0", i);
    add_res(&bd, &u->up[i], pre, prev_ch + u->ch[i], u->ch[i], u->lvl_len[i], u->a_cat[i]);
    prev = u->up[i].a_out;
    prev_ch = u->ch[i];
    if (i > 0) {
      snprintf(pre, sizeof pre, "up%d", i);
      conv_params(&bd, pre, "up", u->ch[i], u->ch[i], k, &u->p_usw[i], &u->p_usb[i]);
      u->macs_per_sample += (double)u->lvl_len[i - 1] * u->ch[i] * u->ch[i] * k;
      u->a_upn[i] = add_act(u, (size_t)u->ch[i] * u->lvl_len[i - 1]);
      u->a_upc[i] = add_act(u, (size_t)u->ch[i] * u->lvl_len[i - 1]);
      prev = u->a_upc[i];
    }
  }

  /* output */
  norm_params(&bd, "", "out_norm", C0, &u->p_onw, &u->p_onb);
  conv_params(&bd, "", "out_conv", S, C0, k, &u->p_ow, &u->p_ob);
  u->macs_per_sample += (double)u->len * S * C0 * k;
  u->a_on = add_act(u, (size_t)C0 * u->len);
  u->a_os = add_act(u, (size_t)C0 * u->len);
  u->a_om = add_act(u, (size_t)c->groups);
  u->a_or = add_act(u, (size_t)c->groups);
  u->a_eps = add_act(u, (size_t)S * u->len);
  if (c->cond_map) {
    lin_params(&bd, "", "out_gate", S, c->emb_dim, &u->p_gw, &u->p_gb);
    u->a_g = add_act(u, (size_t)S);
  }
  return bd.overflow ? LTDI_ERR_OVERFLOW : 0;
}

/* ==== model ============================================================== */

int ltdi_unet_create(ltdi_unet **out, ltdi_backend *be, const ltdi_unet_config *cfg) {
  if (out == NULL || be == NULL) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  int rc = ltdi_unet_config_check(cfg);
  if (rc) return rc;
  ltdi_unet *u = calloc(1, sizeof *u);
  if (u == NULL) return LTDI_ERR_NOMEM;
  u->be = be;
  u->cfg = *cfg;
  rc = build(u);
  if (rc == 0) {
    u->params = be->alloc(be, u->n_params * sizeof(float));
    u->grads = be->alloc(be, u->n_params * sizeof(float));
    if (u->params == NULL || u->grads == NULL) rc = LTDI_ERR_NOMEM;
  }
  if (rc) {
    ltdi_unet_free(u);
    return rc;
  }
  *out = u;
  return 0;
}

void ltdi_unet_free(ltdi_unet *u) {
  if (u == NULL) return;
  if (u->params) u->be->free(u->be, u->params);
  if (u->grads) u->be->free(u->be, u->grads);
  free(u);
}

int ltdi_unet_init(ltdi_unet *u, uint64_t seed) {
  if (u == NULL) return LTDI_ERR_INVALID_ARG;
  float *host = malloc(u->n_params * sizeof *host);
  if (host == NULL) return LTDI_ERR_NOMEM;
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0x756e6574u /* "unet" */);
  double bound = 0.0; /* of the last weight seen: a bias shares its fan-in */
  for (int i = 0; i < u->n_tensors; i++) {
    const ltdi__unet_tdesc *t = &u->tensors[i];
    float *p = host + t->offset;
    const int is_norm = strstr(t->name, "norm") != NULL;
    const int is_bias = strstr(t->name, ".bias") != NULL;
    if (strncmp(t->name, "out_conv.", 9) == 0 || strncmp(t->name, "out_gate.", 9) == 0) {
      memset(p, 0, t->numel * sizeof *p); /* initial prediction exactly 0 */
      continue;
    }
    if (is_norm) {
      for (size_t j = 0; j < t->numel; j++) p[j] = is_bias ? 0.0f : 1.0f;
      continue;
    }
    if (!is_bias) bound = 1.0 / sqrt((double)(t->shape[1] * t->shape[2]));
    for (size_t j = 0; j < t->numel; j++)
      p[j] = (float)((2.0 * ltdi_rng_uniform(&rng) - 1.0) * bound);
  }
  int rc = u->be->upload(u->be, u->params, host, u->n_params * sizeof *host);
  free(host);
  return rc;
}

const ltdi_unet_config *ltdi_unet_config_of(const ltdi_unet *u) { return &u->cfg; }
int ltdi_unet_length(const ltdi_unet *u) { return u->len; }
size_t ltdi_unet_num_params(const ltdi_unet *u) { return u->n_params; }
float *ltdi_unet_params(ltdi_unet *u) { return u->params; }
float *ltdi_unet_grads(ltdi_unet *u) { return u->grads; }

int ltdi_unet_zero_grad(ltdi_unet *u) {
  if (u == NULL) return LTDI_ERR_INVALID_ARG;
  return u->be->fill(u->be, u->grads, 0.0f, u->n_params);
}

int ltdi_unet_num_tensors(const ltdi_unet *u) { return u->n_tensors; }

int ltdi_unet_tensor_at(const ltdi_unet *u, int i, ltdi_unet_tensor *t) {
  if (u == NULL || t == NULL || i < 0 || i >= u->n_tensors) return LTDI_ERR_INVALID_ARG;
  const ltdi__unet_tdesc *d = &u->tensors[i];
  t->name = d->name;
  t->ndim = d->ndim;
  for (int j = 0; j < 3; j++) t->shape[j] = j < d->ndim ? d->shape[j] : 1;
  t->offset = d->offset;
  t->numel = d->numel;
  t->param = u->params + d->offset;
  t->grad = u->grads + d->offset;
  return 0;
}

int ltdi_unet_tensor_find(const ltdi_unet *u, const char *name) {
  if (u == NULL || name == NULL) return LTDI_ERR_INVALID_ARG;
  for (int i = 0; i < u->n_tensors; i++)
    if (strcmp(u->tensors[i].name, name) == 0) return i;
  return LTDI_ERR_NOT_FOUND;
}

double ltdi_unet_forward_flops(const ltdi_unet *u, int batch) {
  return u == NULL ? 0.0 : u->macs_per_sample * batch;
}

/* ==== activation cache =================================================== */

static int acts_create(ltdi_unet_acts **out, const ltdi_unet *u, int max_batch, int grads) {
  if (out == NULL || u == NULL || max_batch <= 0) return LTDI_ERR_INVALID_ARG;
  *out = NULL;
  if (u->act_per_sample > ((size_t)1 << 40) / sizeof(float) / (size_t)max_batch)
    return LTDI_ERR_OVERFLOW;
  ltdi_unet_acts *a = calloc(1, sizeof *a);
  if (a == NULL) return LTDI_ERR_NOMEM;
  ltdi_backend *be = u->be;
  a->be = be;
  a->unet = u;
  a->max_batch = max_batch;
  const size_t n = u->act_per_sample * (size_t)max_batch;
  a->act = be->alloc(be, n * sizeof(float));
  if (grads) {
    a->dact = be->alloc(be, n * sizeof(float));
    a->dx = be->alloc(be, (size_t)max_batch * u->cfg.n_params * sizeof(float));
  }
  if (a->act == NULL || (grads && (a->dact == NULL || a->dx == NULL))) {
    ltdi_unet_acts_free(a);
    return LTDI_ERR_NOMEM;
  }
  *out = a;
  return 0;
}

int ltdi_unet_acts_create(ltdi_unet_acts **out, const ltdi_unet *u, int max_batch) {
  return acts_create(out, u, max_batch, 1);
}

int ltdi_unet_acts_create_inference(ltdi_unet_acts **out, const ltdi_unet *u, int max_batch) {
  return acts_create(out, u, max_batch, 0);
}

void ltdi_unet_acts_free(ltdi_unet_acts *a) {
  if (a == NULL) return;
  if (a->act) a->be->free(a->be, a->act);
  if (a->dact) a->be->free(a->be, a->dact);
  if (a->dx) a->be->free(a->be, a->dx);
  free(a);
}

size_t ltdi_unet_acts_size(const ltdi_unet_acts *a) {
  return a == NULL ? 0 : (a->dact ? 2 : 1) * a->unet->act_per_sample * (size_t)a->max_batch;
}

const float *ltdi_unet_acts_dx(const ltdi_unet_acts *a) { return a == NULL ? NULL : a->dx; }
