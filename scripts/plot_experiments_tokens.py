#!/usr/bin/env python3
"""Draws the class-token ablation figures from scripts/experiments_tokens.sh's
results.csv, as plain SVG (standard library only; no matplotlib needed).

usage: python3 scripts/plot_experiments_tokens.py RESULTS.csv OUTDIR [--tables]
Writes OUTDIR/tokens_fig4.svg (trajectory length), tokens_fig5.svg
(diffusion steps x L) and tokens_fig6.svg (SAM x augmentation in preparation).
Each figure has two panels: the held-out weight MSE that `meta` reports (with
the nearest-centroid, zero-residual, baseline) and the meta-test paired
difference of lt_di to nearest-centroid in percentage points with its 95% CI.
With --tables it also prints the Markdown tables of docs/ABLATIONS_TOKENS.md."""
import csv
import math
import os
import sys
from xml.sax.saxutils import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f"]


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def nice_ticks(lo, hi, n=5):
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 0.5:
        ticks.append(0.0 if abs(t) < step * 1e-6 else round(t, 10))
        t += step
    return ticks


class Panel:
    """One plot area: x positions are categorical indices or log values."""

    def __init__(self, x0, y0, w, h, title, xlabel, ylabel, xticks, xlabels):
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.xticks, self.xlabels = xticks, xlabels
        self.series, self.hlines, self.bars = [], [], []

    def add(self, label, xs, ys, err=None, dash=False, marker="circle", offset=0.0, colour=None):
        self.series.append((label, xs, ys, err, dash, marker, offset, colour))

    def hline(self, label, y, colour="#777777"):
        self.hlines.append((label, y, colour))

    def bar(self, x, y, err, colour, width=0.6):
        self.bars.append((x, y, err, colour, width))

    def _yrange(self):
        vals = []
        for _, _, ys, err, *_ in self.series:
            for i, y in enumerate(ys):
                e = err[i] if err else 0.0
                if math.isfinite(y):
                    vals += [y - (e if math.isfinite(e) else 0), y + (e if math.isfinite(e) else 0)]
        vals += [y for _, y, _ in self.hlines if math.isfinite(y)]
        for _, y, e, _, _ in self.bars:
            if math.isfinite(y):
                vals += [y - e, y + e, 0.0]
        if not vals:
            return 0.0, 1.0
        lo, hi = min(vals), max(vals)
        pad = 0.08 * (hi - lo if hi > lo else 1.0)
        return lo - pad, hi + pad

    def render(self):
        out = []
        lo, hi = self._yrange()
        ticks = nice_ticks(lo, hi)
        lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
        xmin, xmax = min(self.xticks), max(self.xticks)
        span = (xmax - xmin) or 1.0
        xmin, xmax = xmin - 0.12 * span - 0.4 * (span == 1.0), xmax + 0.12 * span

        def px(x):
            return self.x0 + (x - xmin) / (xmax - xmin) * self.w

        def py(y):
            return self.y0 + self.h - (y - lo) / (hi - lo) * self.h

        out.append(f'<rect x="{self.x0}" y="{self.y0}" width="{self.w}" height="{self.h}" '
                   'fill="none" stroke="#333" stroke-width="1"/>')
        for t in ticks:
            if lo <= t <= hi:
                y = py(t)
                out.append(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x0 + self.w}" y2="{y:.1f}" '
                           'stroke="#e5e5e5" stroke-width="1"/>')
                out.append(f'<text x="{self.x0 - 6}" y="{y + 4:.1f}" text-anchor="end" '
                           f'font-size="11">{t:g}</text>')
        if lo < 0 < hi:
            out.append(f'<line x1="{self.x0}" y1="{py(0):.1f}" x2="{self.x0 + self.w}" '
                       f'y2="{py(0):.1f}" stroke="#444" stroke-width="1"/>')
        for x, lab in zip(self.xticks, self.xlabels):
            out.append(f'<text x="{px(x):.1f}" y="{self.y0 + self.h + 16}" text-anchor="middle" '
                       f'font-size="11">{escape(lab)}</text>')
        out.append(f'<text x="{self.x0 + self.w / 2}" y="{self.y0 + self.h + 34}" '
                   f'text-anchor="middle" font-size="12">{escape(self.xlabel)}</text>')
        cy = self.y0 + self.h / 2
        out.append(f'<text x="{self.x0 - 46}" y="{cy}" text-anchor="middle" font-size="12" '
                   f'transform="rotate(-90 {self.x0 - 46} {cy})">{escape(self.ylabel)}</text>')
        out.append(f'<text x="{self.x0 + self.w / 2}" y="{self.y0 - 8}" text-anchor="middle" '
                   f'font-size="13" font-weight="bold">{escape(self.title)}</text>')
        legend = []
        for label, y, colour in self.hlines:
            if math.isfinite(y):
                out.append(f'<line x1="{self.x0}" y1="{py(y):.1f}" x2="{self.x0 + self.w}" '
                           f'y2="{py(y):.1f}" stroke="{colour}" stroke-width="1.5" '
                           'stroke-dasharray="2,3"/>')
                legend.append((label, colour, "dot"))
        for x, y, e, colour, width in self.bars:
            if not math.isfinite(y):
                continue
            bw = width / (xmax - xmin) * self.w
            top, base = py(max(y, 0.0)), py(min(y, 0.0))
            out.append(f'<rect x="{px(x) - bw / 2:.1f}" y="{top:.1f}" width="{bw:.1f}" '
                       f'height="{max(base - top, 0.5):.1f}" fill="{colour}" opacity="0.8"/>')
            out.append(self._errbar(px(x), py(y - e), py(y + e)))
        for k, (label, xs, ys, err, dash, marker, offset, colour) in enumerate(self.series):
            colour = colour or COLOURS[k % len(COLOURS)]
            pts = [(px(x + offset), py(y)) for x, y in zip(xs, ys) if math.isfinite(y)]
            if len(pts) > 1:
                d = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
                extra = ' stroke-dasharray="6,4"' if dash else ""
                out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" '
                           f'stroke-width="1.8"{extra}/>')
            for i, (x, y) in enumerate(zip(xs, ys)):
                if not math.isfinite(y):
                    continue
                if err and math.isfinite(err[i]):
                    out.append(self._errbar(px(x + offset), py(y - err[i]), py(y + err[i]),
                                            colour))
                X, Y = px(x + offset), py(y)
                if marker == "square":
                    out.append(f'<rect x="{X - 4:.1f}" y="{Y - 4:.1f}" width="8" height="8" '
                               f'fill="{colour}"/>')
                else:
                    out.append(f'<circle cx="{X:.1f}" cy="{Y:.1f}" r="4" fill="{colour}"/>')
            legend.append((label, colour, "dash" if dash else "line"))
        for i, (label, colour, kind) in enumerate(legend):
            lx, ly = self.x0 + 8, self.y0 + self.h + 54 + 15 * i
            extra = {"dash": ' stroke-dasharray="6,4"', "dot": ' stroke-dasharray="2,3"'}.get(kind, "")
            out.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 20}" y2="{ly - 4}" '
                       f'stroke="{colour}" stroke-width="2"{extra}/>')
            out.append(f'<text x="{lx + 25}" y="{ly}" font-size="10">{escape(label)}</text>')
        return "\n".join(out)

    @staticmethod
    def _errbar(x, y1, y2, colour="#222"):
        return (f'<line x1="{x:.1f}" y1="{y1:.1f}" x2="{x:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                f'stroke-width="1.2"/><line x1="{x - 4:.1f}" y1="{y1:.1f}" x2="{x + 4:.1f}" '
                f'y2="{y1:.1f}" stroke="{colour}" stroke-width="1.2"/><line x1="{x - 4:.1f}" '
                f'y1="{y2:.1f}" x2="{x + 4:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                'stroke-width="1.2"/>')


def write_svg(path, title, panels, width=900, height=450):
    body = "\n".join(p.render() for p in panels)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">\n'
           f'<rect width="{width}" height="{height}" fill="white"/>\n'
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>\n'
           f"{body}\n</svg>\n")
    with open(path, "w") as f:
        f.write(svg)


def pp(row, key):
    return 100 * number(row.get(key))


def main():
    rows = {r["name"]: r for r in csv.DictReader(open(sys.argv[1]))}
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)

    def get(name):
        return rows.get(name, {})

    # Fig. 4: trajectory length.
    Ls = [2, 3, 4, 6]
    r4 = [get(f"fig4_L{L}") for L in Ls]
    left = Panel(80, 50, 330, 270, "held-out weight MSE", "trained trajectory length L' (2 = Lv-Di)",
                 "weight MSE", Ls, [str(L) for L in Ls])
    left.add("sub-chain sampler", Ls, [number(r.get("mse_subchain")) for r in r4])
    left.add("paper's sampler", Ls, [number(r.get("mse_paper")) for r in r4], dash=True,
             marker="square")
    left.hline("nearest-centroid (zero residual)", number(r4[0].get("mse_nc_baseline")))
    right = Panel(540, 50, 330, 270, "meta-test: lt_di - nearest-centroid",
                  "trained trajectory length L'", "paired difference (pp, 95% CI)", Ls,
                  [str(L) for L in Ls])
    for k, (pair, lab) in enumerate((("5w1s", "5-way 1-shot"), ("20w1s", "20-way 1-shot"))):
        right.add(lab, Ls, [pp(r, f"vs_nc_{pair}") for r in r4],
                  [pp(r, f"vs_nc_{pair}_ci95") for r in r4], offset=(k - 0.5) * 0.12)
    write_svg(os.path.join(out, "tokens_fig4.svg"),
              "Fig. 4 (class tokens): trajectory length, files prepared with L = 6", [left, right])

    # Fig. 5: diffusion steps x trajectory length.
    Ts = [5, 10, 20, 50]
    lx = [math.log10(T) for T in Ts]
    left = Panel(80, 50, 330, 270, "held-out weight MSE", "diffusion steps T (log scale)",
                 "weight MSE", lx, [str(T) for T in Ts])
    for L, dash, marker in ((4, False, "circle"), (2, True, "square")):
        left.add(f"L = {L}" + (" (Lt-Di)" if L == 4 else " (Lv-Di)"), lx,
                 [number(get(f"fig5_T{T}_L{L}").get("mse_subchain")) for T in Ts], dash=dash,
                 marker=marker)
    left.hline("nearest-centroid (zero residual)",
               number(get("fig5_T20_L4").get("mse_nc_baseline")))
    right = Panel(540, 50, 330, 270, "meta-test: lt_di - nearest-centroid",
                  "diffusion steps T (log scale)", "paired difference (pp, 95% CI)", lx,
                  [str(T) for T in Ts])
    k = 0
    for L in (4, 2):
        for c, (pair, lab) in enumerate((("5w1s", "5w1s"), ("20w1s", "20w1s"))):
            rs = [get(f"fig5_T{T}_L{L}") for T in Ts]
            right.add(f"L = {L}, {lab}", lx, [pp(r, f"vs_nc_{pair}") for r in rs],
                      [pp(r, f"vs_nc_{pair}_ci95") for r in rs], dash=(L == 2),
                      marker="square" if L == 2 else "circle",
                      offset=(k - 1.5) * 0.025, colour=COLOURS[c])
            k += 1
    write_svg(os.path.join(out, "tokens_fig5.svg"),
              "Fig. 5 (class tokens): diffusion steps T, trajectory (L = 4) vs vanilla (L = 2)",
              [left, right])

    # Fig. 6: preparation, SAM x augmentation, 5-way 1-shot.
    variants = [("fig6_none", "plain"), ("fig6_sam", "SAM"), ("fig6_aug", "aug"),
                ("fig6_samaug", "SAM + aug")]
    xs = list(range(len(variants)))
    left = Panel(80, 50, 330, 270, "held-out weight MSE (own trajectories)",
                 "preparation (5-way 1-shot)", "weight MSE", xs, [lab for _, lab in variants])
    left.add("generated", xs, [number(get(v).get("mse_subchain")) for v, _ in variants])
    left.add("nearest-centroid (zero residual)", xs,
             [number(get(v).get("mse_nc_baseline")) for v, _ in variants], dash=True,
             marker="square")
    right = Panel(540, 50, 330, 270, "meta-test 5w1s: lt_di - nearest-centroid",
                  "preparation", "paired difference (pp, 95% CI)", xs,
                  [lab for _, lab in variants])
    for i, (v, _) in enumerate(variants):
        right.bar(i, pp(get(v), "vs_nc_5w1s"), pp(get(v), "vs_nc_5w1s_ci95"), COLOURS[i])
    write_svg(os.path.join(out, "tokens_fig6.svg"),
              "Fig. 6 (class tokens): SAM and augmentation in weight preparation", [left, right])


def acc_cell(row, key):
    a, c = pp(row, key), pp(row, key + "_ci95")
    return "" if not math.isfinite(a) else f"{a:.2f} ± {c:.2f}"


def diff_cell(row, pair):
    d, c = pp(row, f"vs_nc_{pair}"), pp(row, f"vs_nc_{pair}_ci95")
    return "" if not math.isfinite(d) else f"{d:+.2f} ± {c:.2f}"


def tables(rows):
    def get(name):
        return rows.get(name, {})

    def mse(r):
        return (f"{number(r.get('mse_subchain')):.4f} | {number(r.get('mse_paper')):.4f} | "
                f"{number(r.get('mse_nc_baseline')):.4f}")

    pairs = ["5w1s", "5w5s", "20w1s", "20w5s"]
    print("### Table 1\n")
    print("| method | samples | " + " | ".join(pairs) + " |")
    print("|---|---|" + "---|" * len(pairs))
    nc = get("t1_lt")
    print("| nearest-centroid | – | " + " | ".join(acc_cell(nc, f"nc_{p}") for p in pairs) + " |")
    for name, label in (("t1_lt", "Lt-Di (L = 4), multitask"), ("t1_lv", "Lv-Di (L = 2), multitask"),
                        ("t1_reptile", "Lt-Di (L = 4), REPTILE")):
        r = get(name)
        print(f"| {label} | {r.get('samples', '')} | "
              + " | ".join(acc_cell(r, f"ltdi_{p}") for p in pairs) + " |")
    print("\npaired difference to nearest-centroid (pp, 95% CI), same episodes:\n")
    print("| method | held-out MSE (sub-chain / paper / NC) | " + " | ".join(pairs) + " |")
    print("|---|---|" + "---|" * len(pairs))
    for name, label in (("t1_lt", "Lt-Di multitask"), ("t1_lv", "Lv-Di multitask"),
                        ("t1_reptile", "Lt-Di REPTILE")):
        r = get(name)
        print(f"| {label} | {mse(r).replace(' | ', ' / ')} | "
              + " | ".join(diff_cell(r, p) for p in pairs) + " |")

    def ablation(title, names, labels, prs):
        print(f"\n### {title}\n")
        head = "| run | MSE sub-chain | MSE paper | MSE NC baseline | "
        head += " | ".join(f"NC {p} | lt_di {p} | vs NC {p}" for p in prs) + " |"
        print(head)
        print("|---|---|---|---|" + "---|---|---|" * len(prs))
        for n, lab in zip(names, labels):
            r = get(n)
            cells = [f"{acc_cell(r, f'nc_{p}')} | {acc_cell(r, f'ltdi_{p}')} | {diff_cell(r, p)}"
                     for p in prs]
            print(f"| {lab} | {mse(r)} | " + " | ".join(cells) + " |")

    ablation("Fig. 4: trajectory length L'", [f"fig4_L{L}" for L in (2, 3, 4, 6)],
             [f"L' = {L}" for L in (2, 3, 4, 6)], ["5w1s", "20w1s"])
    names = [f"fig5_T{T}_L{L}" for T in (5, 10, 20, 50) for L in (2, 4)]
    ablation("Fig. 5: diffusion steps T × L", names,
             [f"T = {T}, L = {L}" for T in (5, 10, 20, 50) for L in (2, 4)], ["5w1s", "20w1s"])
    ablation("Fig. 6: preparation (5-way 1-shot)",
             ["fig6_none", "fig6_sam", "fig6_aug", "fig6_samaug"],
             ["no SAM, no aug (default)", "SAM 0.05", "augment", "SAM 0.05 + augment"],
             ["5w1s"])


if __name__ == "__main__":
    main()
    if "--tables" in sys.argv[3:]:
        tables({r["name"]: r for r in csv.DictReader(open(sys.argv[1]))})
