/* trainer/common/plot.c — the SVG line-plot writer of trainer/common/plot.h:
 * fit the frame to the data, draw the axes, then each series. */
#define _POSIX_C_SOURCE 200809L
#include "trainer/common/plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

static const char *const PALETTE[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                      "#9467bd", "#8c564b", "#e377c2", "#17becf"};

static int usable(const ltdi_plot *p, double x, double y) {
  return isfinite(x) && isfinite(y) && (!p->log_y || y > 0);
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about n ticks. */
static double nice_step(double span, int n) {
  double raw = span / n, mag = pow(10, floor(log10(raw))), r = raw / mag;
  return (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * mag;
}

/* Text with the XML specials escaped. */
static void put_text(FILE *f, const char *s) {
  for (; s && *s; s++) {
    if (*s == '<') fputs("&lt;", f);
    else if (*s == '>') fputs("&gt;", f);
    else if (*s == '&') fputs("&amp;", f);
    else fputc(*s, f);
  }
}

/* The data range and the plot area it maps onto. */
typedef struct frame {
  double x0, x1, y0, y1; /* data range; y in log10 on a log axis */
  double L, R, T, B;     /* plot area in pixels: left, right, top, bottom */
  int W, H;              /* the image */
} frame;

static double px(const frame *fr, double x) {
  return fr->L + (x - fr->x0) / (fr->x1 - fr->x0) * (fr->R - fr->L);
}

static double py(const frame *fr, double y) {
  return fr->B - (y - fr->y0) / (fr->y1 - fr->y0) * (fr->B - fr->T);
}

/* The range of the usable points, widened when flat and padded by 4% in y;
 * LTDI_ERR_INVALID_ARG when no point is usable. */
static int frame_fit(frame *fr, const ltdi_plot *p) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (int s = 0; s < p->n_series; s++)
    for (int i = 0; i < p->series[s].n; i++) {
      double x = p->series[s].x[i], y = p->series[s].y[i];
      if (!usable(p, x, y)) continue;
      if (p->log_y) y = log10(y);
      x0 = fmin(x0, x), x1 = fmax(x1, x), y0 = fmin(y0, y), y1 = fmax(y1, y);
    }
  if (!(x0 <= x1)) return LTDI_ERR_INVALID_ARG;
  if (x1 == x0) x0 -= 0.5, x1 += 0.5;
  if (y1 == y0) y0 -= 0.5, y1 += 0.5;
  double pad = 0.04 * (y1 - y0);
  y0 -= pad, y1 += pad;
  fr->x0 = x0, fr->x1 = x1, fr->y0 = y0, fr->y1 = y1;
  fr->W = p->width > 0 ? p->width : 720, fr->H = p->height > 0 ? p->height : 440;
  fr->L = 78, fr->R = fr->W - 20, fr->T = 36, fr->B = fr->H - 52;
  return 0;
}

/* One horizontal grid line with its label at data height y. */
static void put_ytick(FILE *f, const frame *fr, double y, double label) {
  fprintf(f, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>"
             "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
          fr->L, py(fr, y), fr->R, py(fr, y), fr->L - 6, py(fr, y) + 4, label);
}

/* Grid lines and tick labels at round numbers: 1, 2 and 5 per decade on a
 * log axis. */
static void put_grid(FILE *f, const frame *fr, int log_y) {
  double xs = nice_step(fr->x1 - fr->x0, 6);
  for (double x = ceil(fr->x0 / xs) * xs; x <= fr->x1 + 1e-9 * xs; x += xs)
    fprintf(f, "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#ddd\"/>"
               "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%g</text>\n",
            px(fr, x), fr->T, px(fr, x), fr->B, px(fr, x), fr->B + 16,
            fabs(x) < 1e-12 * xs ? 0.0 : x);
  if (log_y) {
    for (double e = floor(fr->y0); e <= ceil(fr->y1); e += 1)
      for (int m = 1; m <= 5; m += (m == 1 ? 1 : 3)) { /* 1, 2, 5 per decade */
        double y = e + log10((double)m);
        if (y < fr->y0 || y > fr->y1) continue;
        put_ytick(f, fr, y, pow(10, y));
      }
  } else {
    double ys = nice_step(fr->y1 - fr->y0, 6);
    for (double y = ceil(fr->y0 / ys) * ys; y <= fr->y1 + 1e-9 * ys; y += ys)
      put_ytick(f, fr, y, fabs(y) < 1e-12 * ys ? 0.0 : y);
  }
}

/* The background, title, grid, frame and axis labels. */
static void put_axes(FILE *f, const frame *fr, const ltdi_plot *p) {
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
             "font-family=\"sans-serif\" font-size=\"12\">\n", fr->W, fr->H);
  fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", fr->W, fr->H);
  if (p->title) {
    fprintf(f, "<text x=\"%g\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">",
            (fr->L + fr->R) / 2);
    put_text(f, p->title);
    fputs("</text>\n", f);
  }
  put_grid(f, fr, p->log_y);
  fprintf(f, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" "
             "stroke=\"black\"/>\n", fr->L, fr->T, fr->R - fr->L, fr->B - fr->T);
  if (p->xlabel) {
    fprintf(f, "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">", (fr->L + fr->R) / 2,
            fr->H - 12);
    put_text(f, p->xlabel);
    fputs("</text>\n", f);
  }
  if (p->ylabel) {
    fprintf(f, "<text transform=\"translate(16 %g) rotate(-90)\" text-anchor=\"middle\">",
            (fr->T + fr->B) / 2);
    put_text(f, p->ylabel);
    fputs("</text>\n", f);
  }
}

/* Series s: a polyline broken at unusable points, its markers, and its
 * legend entry (row s). */
static void put_series(FILE *f, const frame *fr, const ltdi_plot *p, int s) {
  const ltdi_plot_series *ser = &p->series[s];
  const char *col = ser->color ? ser->color : PALETTE[s % 8];
  int open = 0;
  for (int i = 0; i < ser->n; i++) {
    double x = ser->x[i], y = ser->y[i];
    if (!usable(p, x, y)) {
      if (open) fputs("\"/>\n", f);
      open = 0;
      continue;
    }
    if (p->log_y) y = log10(y);
    if (!open)
      fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", col);
    fprintf(f, "%.1f,%.1f ", px(fr, x), py(fr, y));
    open = 1;
  }
  if (open) fputs("\"/>\n", f);
  if (ser->markers)
    for (int i = 0; i < ser->n; i++) {
      double x = ser->x[i], y = ser->y[i];
      if (!usable(p, x, y)) continue;
      if (p->log_y) y = log10(y);
      fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", px(fr, x), py(fr, y),
              col);
    }
  if (ser->label) {
    double ly = fr->T + 14 + 16 * s, R = fr->R;
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"2\"/>"
               "<text x=\"%g\" y=\"%g\">", R - 170, ly - 4, R - 150, ly - 4, col, R - 144, ly);
    put_text(f, ser->label);
    fputs("</text>\n", f);
  }
}

int ltdi_plot_svg(const char *path, const ltdi_plot *p) {
  if (!path || !p || p->n_series < 1 || !p->series) return LTDI_ERR_INVALID_ARG;
  frame fr;
  int rc = frame_fit(&fr, p);
  if (rc != 0) return rc;
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return LTDI_ERR_INVALID_ARG;
  FILE *f = fopen(tmp, "w");
  if (!f) return LTDI_ERR_IO;
  put_axes(f, &fr, p);
  for (int s = 0; s < p->n_series; s++) put_series(f, &fr, p, s);
  fputs("</svg>\n", f);
  int bad = ferror(f);
  if (fclose(f) || bad || rename(tmp, path)) {
    remove(tmp);
    return LTDI_ERR_IO;
  }
  return 0;
}
