/* trainer/data/glyphs_split.c — which split (meta-train, meta-val,
 * meta-test) each script of the glyph benchmark goes to
 * (glyphs_internal.h): the standard split for the scripts it knows, a
 * greedy share-filling assignment for the others. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "core/rng.h"
#include "trainer/data/glyphs_internal.h"
#include "trainer/data/unicode_letters.h"

typedef struct script_order {
  int script, count;
  uint32_t tie;
} script_order;

static int cmp_script_order(const void *a, const void *b) {
  const script_order *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  if (x->tie != y->tie) return x->tie < y->tie ? -1 : 1;
  return x->script - y->script;
}

/* The standard split: where each script of the full benchmark goes (the
 * greedy assignment below, run on the extended font set, fixed here). Every
 * build uses it, so a model trained on the full meta-train split is never
 * evaluated on one of its training scripts in a --small or custom build. */
static const struct {
  const char *script;
  int split;
} STANDARD_SPLIT[] = {
    {"Ethiopic", 0}, {"Georgian", 0}, {"Devanagari", 0}, {"Sinhala", 0}, {"Thai", 0},
    {"Bengali", 0}, {"Tamil", 0}, {"Gothic", 0}, {"Myanmar", 1}, {"Malayalam", 1},
    {"Telugu", 1}, {"Lao", 1}, {"Gurmukhi", 1}, {"Tibetan", 1}, {"Arabic", 2},
    {"Armenian", 2}, {"Runic", 2}, {"Kannada", 2}, {"Gujarati", 2}, {"Khmer", 2},
    {"Hebrew", 2},
};

static int standard_split_of(const char *script) {
  for (size_t i = 0; script && i < sizeof STANDARD_SPLIT / sizeof STANDARD_SPLIT[0]; i++)
    if (!strcmp(STANDARD_SPLIT[i].script, script)) return STANDARD_SPLIT[i].split;
  return -1;
}

/* The split shares of the classes: meta-train, meta-val, meta-test. */
static const double SPLIT_SHARE[LTDI_GLYPHS_SPLITS] = {0.5, 0.2, 0.3};

/* Scripts of the standard split go where it says. The others, largest
 * first, each go to the split furthest below its share of the classes;
 * while there are only as many scripts left as empty splits, those go to the
 * empty splits, so every split gets a script when there are 3+. The seed
 * only breaks ties between scripts of equal size. */
int ltdi__glyph_assign_splits(const int *count, int n_scripts, uint64_t seed, int *split_of) {
  script_order *o = malloc(((size_t)n_scripts + 1) * sizeof *o);
  if (!o) return LTDI_ERR_NOMEM;
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0x5C1217ull);
  int n = 0, total = 0, have[LTDI_GLYPHS_SPLITS] = {0};
  for (int s = 0; s < n_scripts; s++) {
    split_of[s] = -1;
    uint32_t tie = ltdi_rng_u32(&rng);
    if (count[s] > 0) {
      total += count[s];
      int fixed = standard_split_of(ltdi_script_name(s));
      if (fixed >= 0) {
        split_of[s] = fixed;
        have[fixed] += count[s];
      } else {
        o[n++] = (script_order){s, count[s], tie};
      }
    }
  }
  qsort(o, (size_t)n, sizeof *o, cmp_script_order);
  int empty = 0;
  for (int k = 0; k < LTDI_GLYPHS_SPLITS; k++) empty += have[k] == 0;
  for (int i = 0; i < n; i++) {
    int only_empty = n - i <= empty, best = -1;
    double best_deficit = 0;
    for (int k = 0; k < LTDI_GLYPHS_SPLITS; k++) {
      if (only_empty && have[k]) continue;
      double deficit = SPLIT_SHARE[k] * total - have[k];
      if (best < 0 || deficit > best_deficit) best = k, best_deficit = deficit;
    }
    if (!have[best]) empty--;
    have[best] += o[i].count;
    split_of[o[i].script] = best;
  }
  free(o);
  return 0;
}
