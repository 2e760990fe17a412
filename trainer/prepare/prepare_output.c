/* trainer/prepare/prepare_output.c — the trajectories file that preparation
 * writes (layout and metadata in prepare.h): the four tensors, the options
 * that made them, and the head's layout and the class names as JSON. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/prepare/prepare_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/error.h"
#include "core/safetensors.h"

const char *ltdi__prep_spacing_name(int spacing) {
  return spacing == LTDI_SPACING_DISTANCE ? "distance" : "steps";
}

const char *ltdi__prep_init_name(const ltdi_prepare_config *cfg) {
  if (cfg->head != LTDI_PREPARE_HEAD_MLP) return "proto-maml";
  return cfg->shared_init ? "shared" : "per-task";
}

static int meta_int(ltdi_st_writer *w, const char *key, long long v) {
  char s[32];
  snprintf(s, sizeof s, "%lld", v);
  return ltdi_st_writer_meta(w, key, s);
}

/* The shortest decimal that reads back as the same float ("0.05", not
 * "0.0500000007"). */
static int meta_float(ltdi_st_writer *w, const char *key, float v) {
  char s[32];
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(s, sizeof s, "%.*g", prec, (double)v);
    if (strtof(s, NULL) == v) break;
  }
  return ltdi_st_writer_meta(w, key, s);
}

/* head_layout JSON: order, names, shapes, offsets and init std per tensor. */
static char *head_layout_json(const ltdi_head_dims *dims) {
  json_t *root = json_object(), *arr = json_array();
  int64_t shapes[LTDI_HEAD_TENSORS][2] = {{dims->hidden, dims->in_dim},
                                          {dims->hidden, 0},
                                          {dims->classes, dims->hidden},
                                          {dims->classes, 0}};
  for (int i = 0; i < LTDI_HEAD_TENSORS; i++) {
    json_t *shape = json_array();
    json_array_append_new(shape, json_integer(shapes[i][0]));
    if (shapes[i][1] > 0) json_array_append_new(shape, json_integer(shapes[i][1]));
    json_array_append_new(
        arr, json_pack("{s:s, s:o, s:I, s:I, s:f}", "name", ltdi_head_tensor_name(i),
                       "shape", shape, "offset", (json_int_t)ltdi_head_tensor_offset(dims, i),
                       "size", (json_int_t)ltdi_head_tensor_size(dims, i), "init_std",
                       (double)ltdi_head_init_std(dims, i)));
  }
  json_object_set_new(root, "tensors", arr);
  json_object_set_new(root, "param_count", json_integer((json_int_t)ltdi_head_param_count(dims)));
  json_object_set_new(root, "forward", json_string("logits = fc2(relu(fc1(x)))"));
  char *s = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return s;
}

/* The linear or two-layer head's head_layout JSON: core/weights.h's layout
 * (kind, n_params, tensors with offsets, mean and std, readable back with
 * ltdi_layout_from_json) plus the forward and its logit scale. The
 * two-layer head's is the classifier head's layout with h = d, its
 * statistics set to mean 0, std 1 like the linear head's: a residual's are
 * fitted on data, not implied by an init. */
static char *normalised_layout_json(const ltdi_head_dims *dims, int two_layer) {
  ltdi_layout l;
  ltdi_layout_init(&l, NULL);
  char *base = NULL, *s = NULL;
  int rc = two_layer ? ltdi_layout_head(&l, dims->in_dim, dims->in_dim, dims->classes)
                     : ltdi_layout_linear_head(&l, dims->in_dim, dims->classes);
  if (rc != 0) return NULL;
  for (int i = 0; two_layer && i < l.n_tensors; i++)
    l.tensors[i].mean = 0.0f, l.tensors[i].std = 1.0f;
  if (ltdi_layout_to_json(&l, &base) == 0) {
    json_t *root = json_loads(base, 0, NULL);
    if (root != NULL) {
      json_object_set_new(root, "forward",
                          json_string(two_layer ? "logits = fc2(relu(fc1(x / |x|)))"
                                                : "logits = weight (x / |x|) + bias"));
      json_object_set_new(root, "logit_scale", json_real(LTDI_LINEAR_HEAD_SCALE));
      s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    json_decref(root);
  }
  free(base);
  ltdi_layout_free(&l);
  return s;
}

static char *class_names_json(const ltdi_featurebank *bank) {
  json_t *arr = json_array();
  for (int c = 0; c < bank->n_classes; c++)
    json_array_append_new(arr, json_string(bank->class_names ? bank->class_names[c] : ""));
  char *s = json_dumps(arr, JSON_COMPACT);
  json_decref(arr);
  return s;
}

/* The metadata of prepare.h, part 1: the shapes of what the file holds. */
static int add_shape_metadata(ltdi_st_writer *w, const ltdi__prep_tasks *tc) {
  const ltdi_prepare_config *c = tc->cfg;
  int rc = ltdi_st_writer_meta(w, "format", "ltdi-trajectories");
  if (rc == 0) rc = meta_int(w, "version", 1);
  if (rc == 0) rc = meta_int(w, "tasks", c->tasks);
  if (rc == 0) rc = meta_int(w, "ways", c->ways);
  if (rc == 0) rc = meta_int(w, "shots", c->shots);
  if (rc == 0 && c->train_shots > c->shots) rc = meta_int(w, "train_shots", c->train_shots);
  if (rc == 0) rc = meta_int(w, "in_dim", tc->dims.in_dim);
  if (rc == 0 && c->head == LTDI_PREPARE_HEAD_MLP) rc = meta_int(w, "hidden", c->hidden);
  if (rc == 0 && c->head == LTDI_PREPARE_HEAD_TWO_LAYER)
    rc = meta_int(w, "hidden", tc->dims.hidden);
  if (rc == 0) rc = meta_int(w, "classes", c->ways);
  if (rc == 0) rc = meta_int(w, "param_count", (long long)tc->P);
  if (rc == 0) rc = meta_int(w, "trajectory_length", tc->L);
  return rc;
}

/* Part 2: the recipe and where the data came from. */
static int add_recipe_metadata(ltdi_st_writer *w, const ltdi__prep_tasks *tc) {
  const ltdi_prepare_config *c = tc->cfg;
  int rc = ltdi_st_writer_meta(w, "spacing", ltdi__prep_spacing_name(c->train.spacing));
  if (rc == 0) rc = meta_float(w, "sam_rho", c->train.sam_rho);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "augment", tc->views_used > 1 ? "on" : "off");
  if (rc == 0) rc = meta_int(w, "augment_views", tc->views_used);
  if (rc == 0) rc = meta_int(w, "steps", c->train.steps);
  if (rc == 0) rc = meta_float(w, "lr", c->train.lr);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "optimiser", c->train.use_adam ? "adam" : "sgd");
  if (rc == 0) rc = meta_float(w, "weight_decay", c->train.weight_decay);
  if (rc == 0 && c->head == LTDI_PREPARE_HEAD_TWO_LAYER)
    rc = meta_float(w, "fc1_lr_ratio", c->train.fc1_lr_ratio);
  if (rc == 0) rc = meta_int(w, "seed", (long long)c->seed);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "data_source", c->data_source ? c->data_source : "");
  return rc;
}

/* Part 3: how to read the tensors, per head. */
static int add_reading_metadata(ltdi_st_writer *w, const ltdi__prep_tasks *tc,
                                const char *layout, const char *names) {
  const int mlp = tc->cfg->head == LTDI_PREPARE_HEAD_MLP;
  const int two_layer = tc->cfg->head == LTDI_PREPARE_HEAD_TWO_LAYER;
  int rc = ltdi_st_writer_meta(w, "head", ltdi_prepare_head_name(tc->cfg->head));
  if (rc == 0) rc = ltdi_st_writer_meta(w, "head_layout", layout);
  if (rc == 0 && !mlp) rc = meta_float(w, "logit_scale", LTDI_LINEAR_HEAD_SCALE);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "class_names", names);
  if (rc == 0)
    rc = ltdi_st_writer_meta(w, "embedding_layout",
                             mlp ? "[p_1; ...; p_N], p_n = mean view-0 body feature of class "
                                   "n's support examples, in label order"
                                 : "[p_1; ...; p_N], p_n = mean of the L2-normalised view-0 "
                                   "body features of class n's support examples, in label "
                                   "order");
  if (rc == 0)
    rc = ltdi_st_writer_meta(w, "trajectory_order",
                             mlp ? "row 0 = Gaussian init, row L-1 = trained optimum"
                             : two_layer
                                 ? "row 0 = fc1 the identity, fc1.bias 0, fc2 the Proto-MAML "
                                   "init (fc2.weight_n = 2 s p_n, fc2.bias_n = -s |p_n|^2, s = "
                                   "logit_scale), row L-1 = trained optimum"
                                 : "row 0 = Proto-MAML init (weight_n = 2 s p_n, bias_n = "
                                   "-s |p_n|^2, s = logit_scale), row L-1 = trained optimum");
  if (rc == 0) rc = ltdi_st_writer_meta(w, "init", ltdi__prep_init_name(tc->cfg));
  /* Where the shared init came from (ltdi_rng_init arguments), so a model
   * trained on this file can name the head it was taught to generate. */
  if (rc == 0 && mlp && tc->cfg->shared_init) {
    char num[32];
    snprintf(num, sizeof num, "%llu",
             (unsigned long long)(tc->cfg->seed ^ LTDI__PREPARE_TRAIN_SEED_SALT));
    rc = ltdi_st_writer_meta(w, "init_seed", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)LTDI_PREPARE_SHARED_INIT_STREAM);
    if (rc == 0) rc = ltdi_st_writer_meta(w, "init_stream", num);
  }
  return rc;
}

int ltdi__prep_write_output(const ltdi__prep_tasks *tc, size_t emb_n, const float *traj,
                            const float *emb, const int32_t *classes, const float *loss) {
  const ltdi_prepare_config *c = tc->cfg;
  int M = c->tasks, N = c->ways;
  ltdi_st_writer *w = NULL;
  int rc = ltdi_st_writer_new(&w);
  if (rc != 0) return rc;
  int64_t s_traj[3] = {M, tc->L, (int64_t)tc->P}, s_emb[2] = {M, (int64_t)emb_n};
  int64_t s_cls[2] = {M, N}, s_loss[1] = {M};
  char *layout =
      c->head == LTDI_PREPARE_HEAD_MLP
          ? head_layout_json(&tc->dims)
          : normalised_layout_json(&tc->dims, c->head == LTDI_PREPARE_HEAD_TWO_LAYER);
  char *names = class_names_json(tc->bank);
  if (layout == NULL || names == NULL) rc = LTDI_ERR_NOMEM;
  if (rc == 0) rc = ltdi_st_writer_add(w, "trajectories", LTDI_DTYPE_F32, 3, s_traj, traj);
  if (rc == 0) rc = ltdi_st_writer_add(w, "embeddings", LTDI_DTYPE_F32, 2, s_emb, emb);
  if (rc == 0) rc = ltdi_st_writer_add(w, "classes", LTDI_DTYPE_I32, 2, s_cls, classes);
  if (rc == 0) rc = ltdi_st_writer_add(w, "final_loss", LTDI_DTYPE_F32, 1, s_loss, loss);
  if (rc == 0) rc = add_shape_metadata(w, tc);
  if (rc == 0) rc = add_recipe_metadata(w, tc);
  if (rc == 0) rc = add_reading_metadata(w, tc, layout, names);
  if (rc == 0) rc = ltdi_st_writer_write(w, c->out_path);
  free(layout);
  free(names);
  ltdi_st_writer_free(w);
  return rc;
}
