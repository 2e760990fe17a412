/* trainer/common/stats.c — see stats.h. */
#include "trainer/common/stats.h"

#include <math.h>

void ltdi_stats_mean_ci95(const double *x, int n, double *mean, double *ci95) {
  double m = 0.0, h = 0.0;
  if (n >= 1) {
    for (int i = 0; i < n; i++) m += x[i];
    m /= n;
  }
  if (n >= 2) {
    /* Two passes: the centred sum of squares does not cancel catastrophically
     * the way sum(x^2) - n m^2 can when accuracies are all close to 1. */
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);
    h = 1.96 * sqrt(ss / (n - 1)) / sqrt((double)n);
  }
  if (mean) *mean = m;
  if (ci95) *ci95 = h;
}
