/* trainer/common/plot.h — a tiny SVG line-plot writer for loss curves and the
 * paper's figures: several series of (x, y) points on linear axes (y may be
 * logarithmic), ticks at round numbers, a legend. NaN or infinite points are
 * skipped and break the line; on a log axis so are y <= 0. */
#ifndef LTDI_TRAINER_PLOT_H
#define LTDI_TRAINER_PLOT_H

typedef struct ltdi_plot_series {
  const char *label;   /* legend text (may be NULL) */
  const double *x;     /* (n) */
  const double *y;     /* (n) */
  int n;
  const char *color;   /* SVG colour; NULL picks from a palette */
  int markers;         /* 1: draw a dot at each point */
} ltdi_plot_series;

typedef struct ltdi_plot {
  const char *title, *xlabel, *ylabel; /* may be NULL */
  int log_y;
  int width, height;   /* pixels; 0 → 720 x 440 */
  int n_series;
  const ltdi_plot_series *series;
} ltdi_plot;

/* Writes the plot as an SVG file (written to a temporary name, then
 * renamed). 0, LTDI_ERR_INVALID_ARG (no drawable point) or LTDI_ERR_IO. */
int ltdi_plot_svg(const char *path, const ltdi_plot *p);

#endif
