/* tests/unit/test_episode.c — N-way K-shot sampling: reproducible, distinct
 * classes and members, support/query disjoint and in label order, only
 * classes large enough, too-few-classes error, and episode i independent of
 * the episodes sampled before it. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "trainer/data/episode.h"

/* 12 classes; class c has 2 + c members, interleaved in the example order. */
enum { C = 12 };
static int32_t labels[256];
static int n_examples;
static ltdi_class_index idx;

static void setup(void) {
  n_examples = 0;
  for (int round = 0; round < 2 + C; round++)
    for (int c = 0; c < C; c++)
      if (round < 2 + c) labels[n_examples++] = c;
  cr_assert_eq(ltdi_class_index_build(&idx, labels, n_examples, C), 0);
}
static void teardown(void) { ltdi_class_index_free(&idx); }

TestSuite(episode, .init = setup, .fini = teardown);

Test(episode, index_groups_members) {
  int seen = 0;
  for (int c = 0; c < C; c++) {
    cr_assert_eq(ltdi_class_size(&idx, c), 2 + c);
    for (int k = idx.offsets[c]; k < idx.offsets[c + 1]; k++) {
      cr_assert_eq(labels[idx.members[k]], c);
      seen++;
    }
  }
  cr_assert_eq(seen, n_examples);
}

static void check_episode(const ltdi_episode *ep) {
  int need = ep->shots + ep->queries;
  for (int c = 0; c < ep->ways; c++) {
    cr_assert(ep->classes[c] >= 0 && ep->classes[c] < C);
    cr_assert_geq(ltdi_class_size(&idx, ep->classes[c]), need, "class too small was sampled");
    for (int d = 0; d < c; d++) cr_assert_neq(ep->classes[c], ep->classes[d], "repeated class");
    /* label order: support[c*shots..] and query[c*queries..] belong to class c */
    int32_t mem[64];
    int m = 0;
    for (int k = 0; k < ep->shots; k++) mem[m++] = ep->support[c * ep->shots + k];
    for (int k = 0; k < ep->queries; k++) mem[m++] = ep->query[c * ep->queries + k];
    for (int i = 0; i < m; i++) {
      cr_assert(mem[i] >= 0 && mem[i] < n_examples);
      cr_assert_eq(labels[mem[i]], ep->classes[c], "member of another class");
      for (int j = 0; j < i; j++) cr_assert_neq(mem[i], mem[j], "repeated member / support-query overlap");
    }
  }
}

Test(episode, valid_and_reproducible) {
  ltdi_episode a, b;
  cr_assert_eq(ltdi_episode_alloc(&a, 5, 3, 4), 0);
  cr_assert_eq(ltdi_episode_alloc(&b, 5, 3, 4), 0);
  int differs = 0;
  for (uint64_t e = 0; e < 50; e++) {
    cr_assert_eq(ltdi_episode_sample(&a, &idx, 123, e), 0);
    check_episode(&a);
    cr_assert_eq(ltdi_episode_sample(&b, &idx, 123, e), 0);
    cr_assert_eq(memcmp(a.classes, b.classes, 5 * sizeof(int32_t)), 0);
    cr_assert_eq(memcmp(a.support, b.support, 15 * sizeof(int32_t)), 0);
    cr_assert_eq(memcmp(a.query, b.query, 20 * sizeof(int32_t)), 0);
    cr_assert_eq(ltdi_episode_sample(&b, &idx, 124, e), 0);
    differs += memcmp(a.support, b.support, 15 * sizeof(int32_t)) != 0;
  }
  cr_assert_gt(differs, 40, "another seed should give other episodes");
  ltdi_episode_free(&a);
  ltdi_episode_free(&b);
}

Test(episode, independent_of_order) {
  ltdi_episode a, b;
  cr_assert_eq(ltdi_episode_alloc(&a, 4, 1, 2), 0);
  cr_assert_eq(ltdi_episode_alloc(&b, 4, 1, 2), 0);
  for (uint64_t e = 0; e < 10; e++) cr_assert_eq(ltdi_episode_sample(&a, &idx, 5, e), 0);
  cr_assert_eq(ltdi_episode_sample(&a, &idx, 5, 10), 0);
  cr_assert_eq(ltdi_episode_sample(&b, &idx, 5, 10), 0); /* fresh, no history */
  cr_assert_eq(memcmp(a.classes, b.classes, 4 * sizeof(int32_t)), 0);
  cr_assert_eq(memcmp(a.support, b.support, 4 * sizeof(int32_t)), 0);
  cr_assert_eq(memcmp(a.query, b.query, 8 * sizeof(int32_t)), 0);
  ltdi_episode_free(&a);
  ltdi_episode_free(&b);
}

Test(episode, covers_all_eligible_classes) {
  /* 1 shot + 9 queries: only classes with >= 10 members (c >= 8) qualify. */
  ltdi_episode ep;
  cr_assert_eq(ltdi_episode_alloc(&ep, 2, 1, 9), 0);
  int hits[C] = {0};
  for (uint64_t e = 0; e < 200; e++) {
    cr_assert_eq(ltdi_episode_sample(&ep, &idx, 77, e), 0);
    check_episode(&ep);
    for (int c = 0; c < 2; c++) hits[ep.classes[c]]++;
  }
  for (int c = 0; c < C; c++) {
    if (c < 8) cr_assert_eq(hits[c], 0, "class %d too small but sampled", c);
    else cr_assert_gt(hits[c], 0, "class %d never sampled", c);
  }
  ltdi_episode_free(&ep);
}

Test(episode, too_few_classes) {
  ltdi_episode ep;
  /* need 12 members: only class 10 (12) and 11 (13) qualify */
  cr_assert_eq(ltdi_episode_alloc(&ep, 3, 6, 6), 0);
  cr_assert_eq(ltdi_episode_sample(&ep, &idx, 1, 0), LTDI_ERR_INVALID_ARG);
  ltdi_episode_free(&ep);
  cr_assert_eq(ltdi_episode_alloc(&ep, 2, 6, 6), 0);
  cr_assert_eq(ltdi_episode_sample(&ep, &idx, 1, 0), 0);
  check_episode(&ep);
  ltdi_episode_free(&ep);
  ltdi_class_index bad;
  int32_t wrong[2] = {0, 5};
  cr_assert_eq(ltdi_class_index_build(&bad, wrong, 2, 3), LTDI_ERR_INVALID_ARG);
}
