/* trainer/common/stats.h — summary statistics for evaluation: the mean of per-episode
 * accuracies and its 95% confidence half-width. */
#ifndef LTDI_TRAINER_STATS_H
#define LTDI_TRAINER_STATS_H

/* Mean of x (n), and the half-width of the normal-approximation 95%
 * confidence interval of that mean: 1.96 * s / sqrt(n), s the sample standard
 * deviation (divisor n - 1). With n < 2 the half-width is 0 (no spread can be
 * estimated); with n < 1 the mean is 0. Either output may be NULL. */
void ltdi_stats_mean_ci95(const double *x, int n, double *mean, double *ci95);

#endif
