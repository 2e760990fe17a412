/* trainer/common/plot.c — the SVG line-plot writer of trainer/common/plot.h. */
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

int ltdi_plot_svg(const char *path, const ltdi_plot *p) {
  if (!path || !p || p->n_series < 1 || !p->series) return LTDI_ERR_INVALID_ARG;
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
  const int W = p->width > 0 ? p->width : 720, H = p->height > 0 ? p->height : 440;
  const double L = 78, R = W - 20, T = 36, B = H - 52; /* plot area */
#define PX(x) (L + ((x) - x0) / (x1 - x0) * (R - L))
#define PY(y) (B - ((y) - y0) / (y1 - y0) * (B - T))
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return LTDI_ERR_INVALID_ARG;
  FILE *f = fopen(tmp, "w");
  if (!f) return LTDI_ERR_IO;
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
             "font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
  fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
  if (p->title) {
    fprintf(f, "<text x=\"%g\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">", (L + R) / 2);
    put_text(f, p->title);
    fputs("</text>\n", f);
  }
  /* Grid and ticks. */
  double xs = nice_step(x1 - x0, 6);
  for (double x = ceil(x0 / xs) * xs; x <= x1 + 1e-9 * xs; x += xs)
    fprintf(f, "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#ddd\"/>"
               "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%g</text>\n",
            PX(x), T, PX(x), B, PX(x), B + 16, fabs(x) < 1e-12 * xs ? 0.0 : x);
  if (p->log_y) {
    for (double e = floor(y0); e <= ceil(y1); e += 1)
      for (int m = 1; m <= 5; m += (m == 1 ? 1 : 3)) { /* 1, 2, 5 per decade */
        double y = e + log10((double)m);
        if (y < y0 || y > y1) continue;
        fprintf(f, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                L, PY(y), R, PY(y), L - 6, PY(y) + 4, pow(10, y));
      }
  } else {
    double ys = nice_step(y1 - y0, 6);
    for (double y = ceil(y0 / ys) * ys; y <= y1 + 1e-9 * ys; y += ys)
      fprintf(f, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                 "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
              L, PY(y), R, PY(y), L - 6, PY(y) + 4, fabs(y) < 1e-12 * ys ? 0.0 : y);
  }
  fprintf(f, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"black\"/>\n",
          L, T, R - L, B - T);
  if (p->xlabel) {
    fprintf(f, "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">", (L + R) / 2, H - 12);
    put_text(f, p->xlabel);
    fputs("</text>\n", f);
  }
  if (p->ylabel) {
    fprintf(f, "<text transform=\"translate(16 %g) rotate(-90)\" text-anchor=\"middle\">",
            (T + B) / 2);
    put_text(f, p->ylabel);
    fputs("</text>\n", f);
  }
  /* Series: polylines broken at unusable points, then the legend. */
  for (int s = 0; s < p->n_series; s++) {
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
      fprintf(f, "%.1f,%.1f ", PX(x), PY(y));
      open = 1;
    }
    if (open) fputs("\"/>\n", f);
    if (ser->markers)
      for (int i = 0; i < ser->n; i++) {
        double x = ser->x[i], y = ser->y[i];
        if (!usable(p, x, y)) continue;
        if (p->log_y) y = log10(y);
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", PX(x), PY(y), col);
      }
    if (ser->label) {
      double ly = T + 14 + 16 * s;
      fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"2\"/>"
                 "<text x=\"%g\" y=\"%g\">", R - 170, ly - 4, R - 150, ly - 4, col, R - 144, ly);
      put_text(f, ser->label);
      fputs("</text>\n", f);
    }
  }
#undef PX
#undef PY
  fputs("</svg>\n", f);
  int bad = ferror(f);
  if (fclose(f) || bad || rename(tmp, path)) {
    remove(tmp);
    return LTDI_ERR_IO;
  }
  return 0;
}
