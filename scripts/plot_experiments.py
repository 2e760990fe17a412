#!/usr/bin/env python3
"""Draws the ablation figures from scripts/experiments.sh's results.csv.

usage: python3 scripts/plot_experiments.py RESULTS.csv OUTDIR
Writes fig4_trajectory_length.svg, fig5_diffusion_steps.svg and
fig6_preparation.svg (matplotlib, from PyPI)."""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def number(text):
    return float(text) if text not in ("", None) else float("nan")


def main():
    rows = {r["name"]: r for r in csv.DictReader(open(sys.argv[1]))}
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)

    lengths = [2, 3, 4, 6]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(lengths, [number(rows[f"fig4_L{L}"]["mse_subchain"]) for L in lengths], "o-",
            label="sub-chain sampler")
    ax.plot(lengths, [number(rows[f"fig4_L{L}"]["mse_paper"]) for L in lengths], "s--",
            label="paper's sampler")
    ax.axhline(number(rows["fig4_L2"]["mse_mean_baseline"]), color="grey", lw=0.8,
               label="mean optimum")
    ax.set_xlabel("trajectory length L (2 = Lv-Di)")
    ax.set_ylabel("held-out weight MSE")
    ax.set_xticks(lengths)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig4_trajectory_length.svg"))

    steps = [5, 10, 20, 50]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for L, style, label in ((4, "o-", "trajectory (L=4)"), (2, "s--", "vanilla (L=2)")):
        ax.plot(steps, [number(rows[f"fig5_T{T}_L{L}"]["mse_subchain"]) for T in steps], style,
                label=label)
    ax.set_xscale("log")
    ax.set_xticks(steps)
    ax.set_xticklabels([str(T) for T in steps])
    ax.set_xlabel("diffusion steps T")
    ax.set_ylabel("held-out weight MSE")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig5_diffusion_steps.svg"))

    variants = [("fig6_none", "plain"), ("fig6_nosam", "+ augmentation"),
                ("fig6_L4", "+ augmentation + SAM")]
    acc = [100 * number(rows[v]["test_acc"]) for v, _ in variants]
    ci = [100 * number(rows[v]["test_ci95"]) for v, _ in variants]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.bar(range(3), acc, yerr=ci, capsize=4, color="#6a8caf")
    ax.set_xticks(range(3))
    ax.set_xticklabels([label for _, label in variants], fontsize=8)
    ax.set_ylabel("Lt-Di 5-way 1-shot accuracy (%)")
    low = min(a - c for a, c in zip(acc, ci))
    ax.set_ylim(max(0.0, low - 5), min(100.0, max(acc) + 3))
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig6_preparation.svg"))


if __name__ == "__main__":
    main()
