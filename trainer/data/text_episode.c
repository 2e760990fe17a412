/* trainer/data/text_episode.c — N-way K-shot episodes over a text set
 * (trainer/data/textset.h). The draw itself is trainer/data/episode.c's: once
 * every class is checked to be large enough, its "eligible classes" are all
 * the classes in id order, so the episode is the documented partial
 * Fisher-Yates over the class ids and then over each class's members. */
#include <string.h>

#include "base/error.h"
#include "trainer/data/textset.h"

int ltdi_text_episode_check(const ltdi_textset *set, int ways, int shots, int queries,
                            char *err, size_t errlen) {
  if (!set || ways <= 0 || shots <= 0 || queries < 0 || shots > INT32_MAX - queries)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "bad episode shape");
  const char *path = set->path ? set->path : "text set";
  int need = shots + queries;
  if (set->n_classes < ways)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "%s: %d classes; a %d-way episode needs %d", path, set->n_classes, ways,
                     ways);
  /* Name the smallest class, so one message says how far the set is off. */
  int worst = -1;
  for (int c = 0; c < set->n_classes; c++)
    if (ltdi_class_size(&set->by_class, c) < need &&
        (worst < 0 || ltdi_class_size(&set->by_class, c) < ltdi_class_size(&set->by_class, worst)))
      worst = c;
  if (worst >= 0) {
    int short_classes = 0;
    for (int c = 0; c < set->n_classes; c++) short_classes += ltdi_class_size(&set->by_class, c) < need;
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG,
                     "%s: class '%s' has %d examples; a %d-way %d-shot episode with %d queries "
                     "per class needs %d (%d class%s too small)", path,
                     set->class_names[worst], ltdi_class_size(&set->by_class, worst), ways, shots,
                     queries, need, short_classes, short_classes == 1 ? " is" : "es are");
  }
  return 0;
}

int ltdi_text_episode_sample(ltdi_episode *ep, const ltdi_textset *set, uint64_t seed,
                             uint64_t index, char *err, size_t errlen) {
  if (!ep || !ep->classes)
    return ltdi_fail(err, errlen, LTDI_ERR_INVALID_ARG, "episode not allocated");
  int rc = ltdi_text_episode_check(set, ep->ways, ep->shots, ep->queries, err, errlen);
  if (rc) return rc;
  rc = ltdi_episode_sample(ep, &set->by_class, seed, index);
  return rc ? ltdi_fail(err, errlen, rc, "episode sampling: %s", ltdi_strerror(rc)) : 0;
}
