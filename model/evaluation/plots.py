"""The report's figures: matplotlib (Agg backend, no display) on the arrays build_report keeps.

Each function returns a Figure; html.py turns it into an inline PNG. Colours are fixed per cohort so
that train, holdout and synthetic read the same in every figure.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

COLOURS = {"train": "#4c72b0", "holdout": "#55a868", "synthetic": "#c44e52"}
MAX_POINTS = 20_000  # scatter points per cohort: enough to see the cloud, small enough to draw fast


def prevalence_scatter(others: dict[str, tuple[np.ndarray, np.ndarray]], title: str, seed: int = 0):
    """Train prevalence (x) against each other cohort's (y), aligned by key, log axes, keys either side has.

    Zeros cannot sit on a log axis: they are drawn at half the smallest non-zero value, on the edge.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    rng = np.random.default_rng(seed)
    lo_all, hi_all = [], []
    for name, (x, y) in others.items():
        keep = np.flatnonzero((x > 0) | (y > 0))
        if len(keep) > MAX_POINTS:
            keep = rng.choice(keep, MAX_POINTS, replace=False)
        x, y = x[keep], y[keep]
        nonzero = np.r_[x[x > 0], y[y > 0]]
        if len(nonzero) == 0:
            continue
        floor = nonzero.min() / 2
        lo_all.append(floor)
        hi_all.append(nonzero.max())
        ax.scatter(np.maximum(x, floor), np.maximum(y, floor), s=4, alpha=0.4, color=COLOURS.get(name), label=name, linewidths=0)
    if lo_all:
        lo, hi = min(lo_all), max(hi_all) * 1.5
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xlabel("train prevalence (share of visits)")
    ax.set_ylabel("cohort prevalence")
    ax.set_title(title)
    ax.legend(loc="upper left", markerscale=3)
    fig.tight_layout()
    return fig


def count_histograms(lengths: dict[str, tuple[np.ndarray, np.ndarray]]):
    """Visits per patient and codes per visit, as shares, one bar group per cohort."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, i, label in ((axes[0], 0, "visits per patient"), (axes[1], 1, "codes per visit")):
        arrays = {k: v[i] for k, v in lengths.items() if len(v[i])}
        top = int(max((np.percentile(a, 99) for a in arrays.values()), default=1)) + 1
        bins = np.arange(0, top + 2) - 0.5
        width = 0.8 / max(len(arrays), 1)
        for j, (name, a) in enumerate(arrays.items()):
            share, _ = np.histogram(np.minimum(a, top), bins=bins)
            share = share / len(a)
            ax.bar(np.arange(len(share)) + (j - (len(arrays) - 1) / 2) * width, share, width=width,
                   color=COLOURS.get(name), label=name)
        ax.set_xlabel(label + f" (last bar: >= {top})")
        ax.set_ylabel("share")
        ax.legend()
    fig.tight_layout()
    return fig


def demographics(demo: dict[str, tuple[np.ndarray, np.ndarray]]):
    """Age histograms (shares) and the female share per cohort."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [3, 1]})
    bins = np.arange(0, 96, 5)
    for name, (age, _) in demo.items():
        if len(age):
            axes[0].hist(age, bins=bins, weights=np.full(len(age), 1 / len(age)), histtype="step", lw=1.5,
                         color=COLOURS.get(name), label=name)
    axes[0].set_xlabel("age (years)")
    axes[0].set_ylabel("share")
    axes[0].legend()
    names = list(demo)
    female = [float(np.mean(demo[n][1])) if len(demo[n][1]) else 0.0 for n in names]
    axes[1].bar(names, female, color=[COLOURS.get(n) for n in names])
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("female share")
    fig.tight_layout()
    return fig


def distance_histograms(distances: dict[str, np.ndarray]):
    """Distance (Jaccard) to the closest record: train members vs holdout non-members vs synthetic.

    If train members sit nearer to synthetic records than holdout patients do, the generator has
    memorised them: the membership-inference attack reads exactly this gap.
    """
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(0, 1, 41)
    labels = {
        "train_to_synthetic": ("train sample -> closest synthetic", COLOURS["train"]),
        "holdout_to_synthetic": ("holdout -> closest synthetic", COLOURS["holdout"]),
        "synthetic_to_train": ("synthetic -> closest train sample", COLOURS["synthetic"]),
    }
    for key, d in distances.items():
        if len(d):
            label, colour = labels.get(key, (key, None))
            ax.hist(d, bins=bins, weights=np.full(len(d), 1 / len(d)), histtype="step", lw=1.5, color=colour, label=label)
    ax.set_xlabel("Jaccard distance to the closest record (0 = same code set)")
    ax.set_ylabel("share")
    ax.legend()
    fig.tight_layout()
    return fig


def fidelity_by_size(curves: dict):
    """R^2 against train by sample size, one panel per measure: synthetic (solid) and holdout (dashed).

    The holdout's curve is what a real sample of that size reaches; where the synthetic curve falls
    below it, the generator stops tracking real data at that resolution.
    """
    names = list(curves["holdout"])
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
    n = curves["n"]
    for ax, name in zip(axes[0], names):
        for cohort, style in (("holdout", "--"), ("synthetic", "-")):
            y = [np.nan if v is None else v for v in curves[cohort][name]]
            ax.plot(n, y, style, marker="o", color=COLOURS[cohort], label=cohort)
        ax.set_xscale("log")
        ax.set_xticks(n, [str(k) for k in n])
        ax.set_xlabel("patients in the sample")
        ax.set_ylabel("R^2 against train")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    return fig


# Day ticks of the log(1 + days) axis: a day, a week, a month, a quarter, a year, three and ten years.
DAY_TICKS = (0, 1, 7, 30, 90, 365, 1095, 3650)


def day_histogram(days: dict[str, np.ndarray], what: str):
    """Shares of day counts per cohort on a log(1 + days) axis, so that 0 (same day) shows and a year is
    as readable as a day; ticks are labelled in days. Bin edges are whole days, evenly spaced on the log
    axis where that leaves at least a day per bin (so no bin between two whole days stays empty)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    top = max((float(d.max()) for d in days.values() if len(d)), default=1.0)
    bins = np.log1p(np.unique(np.round(np.geomspace(1, top + 2, 41)) - 1))
    for name, d in days.items():
        if len(d):
            ax.hist(np.log1p(d), bins=bins, weights=np.full(len(d), 1 / len(d)), histtype="step", lw=1.5,
                    color=COLOURS.get(name), label=f"{name} ({len(d)})")
    ticks = [t for t in DAY_TICKS if t <= top] or [0]
    ax.set_xticks(np.log1p(ticks), [str(t) for t in ticks])
    ax.set_xlabel(f"{what} (days, log(1 + days) axis)")
    ax.set_ylabel("share")
    ax.legend()
    fig.tight_layout()
    return fig
