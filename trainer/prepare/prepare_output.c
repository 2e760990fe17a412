/* trainer/prepare/prepare_output.c — the trajectories file that preparation
 * writes (layout and metadata in prepare.h): the four tensors, the options
 * that made them, and the head layout and class names as JSON. */
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

static char *class_names_json(const ltdi_featurebank *bank) {
  json_t *arr = json_array();
  for (int c = 0; c < bank->n_classes; c++)
    json_array_append_new(arr, json_string(bank->class_names ? bank->class_names[c] : ""));
  char *s = json_dumps(arr, JSON_COMPACT);
  json_decref(arr);
  return s;
}

/* The metadata of prepare.h, in the file's order: the shapes, the recipe,
 * where the data came from, and how to read the tensors. */
static int add_metadata(ltdi_st_writer *w, const ltdi__prep_tasks *tc, const char *layout,
                        const char *names) {
  const ltdi_prepare_config *c = tc->cfg;
  int M = c->tasks, N = c->ways;
  int rc = ltdi_st_writer_meta(w, "format", "ltdi-trajectories");
  if (rc == 0) rc = meta_int(w, "version", 1);
  if (rc == 0) rc = meta_int(w, "tasks", M);
  if (rc == 0) rc = meta_int(w, "ways", N);
  if (rc == 0) rc = meta_int(w, "shots", c->shots);
  if (rc == 0) rc = meta_int(w, "in_dim", tc->dims.in_dim);
  if (rc == 0) rc = meta_int(w, "hidden", c->hidden);
  if (rc == 0) rc = meta_int(w, "classes", N);
  if (rc == 0) rc = meta_int(w, "param_count", (long long)tc->P);
  if (rc == 0) rc = meta_int(w, "trajectory_length", tc->L);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "spacing", ltdi__prep_spacing_name(c->train.spacing));
  if (rc == 0) rc = meta_float(w, "sam_rho", c->train.sam_rho);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "augment", tc->views_used > 1 ? "on" : "off");
  if (rc == 0) rc = meta_int(w, "augment_views", tc->views_used);
  if (rc == 0) rc = meta_int(w, "steps", c->train.steps);
  if (rc == 0) rc = meta_float(w, "lr", c->train.lr);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "optimiser", c->train.use_adam ? "adam" : "sgd");
  if (rc == 0) rc = meta_float(w, "weight_decay", c->train.weight_decay);
  if (rc == 0) rc = meta_int(w, "seed", (long long)c->seed);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "data_source", c->data_source ? c->data_source : "");
  if (rc == 0) rc = ltdi_st_writer_meta(w, "head_layout", layout);
  if (rc == 0) rc = ltdi_st_writer_meta(w, "class_names", names);
  if (rc == 0)
    rc = ltdi_st_writer_meta(w, "embedding_layout",
                             "[p_1; ...; p_N], p_n = mean view-0 body feature of class n's "
                             "support examples, in label order");
  if (rc == 0)
    rc = ltdi_st_writer_meta(w, "trajectory_order",
                             "row 0 = Gaussian init, row L-1 = trained optimum");
  if (rc == 0) rc = ltdi_st_writer_meta(w, "init", c->shared_init ? "shared" : "per-task");
  /* Where the shared init came from (ltdi_rng_init arguments), so a model
   * trained on this file can name the head it was taught to generate. */
  if (rc == 0 && c->shared_init) {
    char num[32];
    snprintf(num, sizeof num, "%llu",
             (unsigned long long)(c->seed ^ LTDI__PREPARE_TRAIN_SEED_SALT));
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
  char *layout = head_layout_json(&tc->dims), *names = class_names_json(tc->bank);
  if (layout == NULL || names == NULL) rc = LTDI_ERR_NOMEM;
  if (rc == 0) rc = ltdi_st_writer_add(w, "trajectories", LTDI_DTYPE_F32, 3, s_traj, traj);
  if (rc == 0) rc = ltdi_st_writer_add(w, "embeddings", LTDI_DTYPE_F32, 2, s_emb, emb);
  if (rc == 0) rc = ltdi_st_writer_add(w, "classes", LTDI_DTYPE_I32, 2, s_cls, classes);
  if (rc == 0) rc = ltdi_st_writer_add(w, "final_loss", LTDI_DTYPE_F32, 1, s_loss, loss);
  if (rc == 0) rc = add_metadata(w, tc, layout, names);
  if (rc == 0) rc = ltdi_st_writer_write(w, c->out_path);
  free(layout);
  free(names);
  ltdi_st_writer_free(w);
  return rc;
}
