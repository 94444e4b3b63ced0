"""Fidelity by sample size: where does the synthetic cohort track a real sample of the same size?

Prevalence R^2 against train falls as a sample shrinks, for real data as much as for synthetic. For
each n in SIZES (capped at the holdout's size, which is always added), the mean R^2 over `repeats`
random subsamples of n synthetic patients and of n holdout patients: a generator as good as real data
draws the same curve as the holdout; where the curves part, it stops tracking real data.
"""
from __future__ import annotations

import numpy as np

from promptehr.model.evaluation.counts import Encoded, subset
from promptehr.model.evaluation.fidelity import Stats, prevalence_measures, stats

SIZES = (250, 500, 1000)
MEASURES = ("unigram_r2", "cooccurrence_r2", "transition_r2")


def sizes_for(n_holdout: int, n_synthetic: int) -> list[int]:
    top = min(n_holdout, n_synthetic)
    return sorted({n for n in SIZES if n < top} | {top}) if top > 0 else []


def curve(train: Stats, enc: Encoded, cats, sizes: list[int], repeats: int, rng) -> dict[str, list]:
    """{measure: [mean R^2 at each size]} for subsamples of `enc` (the whole cohort once at its own size)."""
    out: dict[str, list] = {m: [] for m in MEASURES}
    for n in sizes:
        draws = [np.arange(enc.n_patients)] if n >= enc.n_patients else \
            [np.sort(rng.choice(enc.n_patients, n, replace=False)) for _ in range(repeats)]
        scores = [prevalence_measures(train, stats(subset(enc, rows), cats)) for rows in draws]
        for m in MEASURES:
            vals = [s[m] for s in scores if s[m] is not None]
            out[m].append(float(np.mean(vals)) if vals else None)
    return out


def fidelity_by_size(train_stats: Stats, holdout: Encoded, synth: Encoded, cats, rng, repeats: int = 3) -> dict:
    sizes = sizes_for(holdout.n_patients, synth.n_patients)
    return {"n": sizes, "repeats": repeats,
            "synthetic": curve(train_stats, synth, cats, sizes, repeats, rng),
            "holdout": curve(train_stats, holdout, cats, sizes, repeats, rng)}
