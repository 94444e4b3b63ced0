"""Fidelity: does a cohort have the code, pair, transition and category statistics of the training data?

Per-visit prevalences (share of visits containing a code, a same-visit pair, a category; share of
consecutive-visit pairs with a transition) follow HALO's R^2 tables: sklearn r2_score(train, other)
over the union of keys that either side has, missing = 0 (keys absent from both would only inflate R^2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp
from sklearn.metrics import r2_score

from promptehr.model.evaluation.counts import (
    Encoded,
    align,
    binarize,
    pair_counts,
    transition_counts,
    transitions,
)

MIN_TRAIN_PAIR_COUNT = 5  # a pair seen this often in training visits is "supported"
TOP_K = 100


@dataclass
class Stats:
    """Counts of one cohort, computed once and compared against training many times."""

    code_visits: np.ndarray  # visits containing each code
    pair_keys: np.ndarray
    pair_visits: np.ndarray  # visits containing each pair
    trans_keys: np.ndarray
    trans_counts: np.ndarray
    category_visits: np.ndarray  # visits containing each category
    n_visits: int
    n_transitions: int


def stats(enc: Encoded, categories: sp.csr_matrix) -> Stats:
    pk, pv = pair_counts(enc)
    tk, tc = transition_counts(enc)
    return Stats(
        code_visits=np.asarray(enc.visits.sum(axis=0)).ravel().astype(np.float64),
        pair_keys=pk,
        pair_visits=pv,
        trans_keys=tk,
        trans_counts=tc,
        category_visits=np.asarray(binarize(enc.visits @ categories).sum(axis=0)).ravel().astype(np.float64),
        n_visits=enc.n_visits,
        n_transitions=len(transitions(enc)[0]),
    )


def r2_union(a: np.ndarray, b: np.ndarray) -> float | None:
    """R^2 of b predicting a on the entries where either is non-zero."""
    keep = (a != 0) | (b != 0)
    if keep.sum() < 2:
        return None
    return float(r2_score(a[keep], b[keep]))


def _share(x: np.ndarray, n: int) -> np.ndarray:
    return x / n if n else np.zeros_like(x)


def unigram_r2(train: Stats, other: Stats) -> float | None:
    return r2_union(_share(train.code_visits, train.n_visits), _share(other.code_visits, other.n_visits))


def category_r2(train: Stats, other: Stats) -> float | None:
    return r2_union(_share(train.category_visits, train.n_visits), _share(other.category_visits, other.n_visits))


def cooccurrence_r2(train: Stats, other: Stats) -> float | None:
    _, a, b = align(train.pair_keys, train.pair_visits, other.pair_keys, other.pair_visits)
    return r2_union(_share(a, train.n_visits), _share(b, other.n_visits))


def transition_r2(train: Stats, other: Stats) -> float | None:
    _, a, b = align(train.trans_keys, train.trans_counts, other.trans_keys, other.trans_counts)
    return r2_union(_share(a, train.n_transitions), _share(b, other.n_transitions))


def js_divergence(train: Stats, other: Stats) -> float | None:
    """Jensen-Shannon divergence, base 2 (in [0, 1]). scipy returns the distance, its square root."""
    if train.code_visits.sum() == 0 or other.code_visits.sum() == 0:
        return None
    return float(jensenshannon(train.code_visits, other.code_visits, base=2) ** 2)


def top_codes(counts: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Columns of the k most frequent codes (ties by column order, so the result is deterministic)."""
    order = np.argsort(-counts, kind="stable")
    return order[: min(k, int((counts > 0).sum()))]


def top100_overlap(train: Stats, other: Stats) -> float | None:
    a = top_codes(train.code_visits)
    if len(a) == 0:
        return None
    return len(np.intersect1d(a, top_codes(other.code_visits))) / len(a)


def cooccurrence_supported_share(train: Stats, other: Stats) -> float | None:
    """Share of the other cohort's within-visit pair occurrences seen >= 5 times in training visits."""
    total = other.pair_visits.sum()
    if total == 0:
        return None
    if len(train.pair_keys) == 0:
        return 0.0
    pos = np.minimum(np.searchsorted(train.pair_keys, other.pair_keys), len(train.pair_keys) - 1)
    train_count = np.where(train.pair_keys[pos] == other.pair_keys, train.pair_visits[pos], 0)
    return float(other.pair_visits[train_count >= MIN_TRAIN_PAIR_COUNT].sum() / total)


# Measures compared on equal-size subsamples (they move with sample size) and on the whole cohort.
PREVALENCE_MEASURES = {
    "unigram_r2": unigram_r2,
    "cooccurrence_r2": cooccurrence_r2,
    "transition_r2": transition_r2,
    "category_r2": category_r2,
    "js_divergence": js_divergence,
    "top100_overlap": top100_overlap,
    "cooccurrence_supported_share": cooccurrence_supported_share,
}


def prevalence_measures(train: Stats, other: Stats) -> dict[str, float | None]:
    return {name: fn(train, other) for name, fn in PREVALENCE_MEASURES.items()}


def length_measures(train: Encoded, other: Encoded) -> dict[str, float | None]:
    """Means of visits per patient and codes per visit, and KS statistics of their distributions."""
    def mean(x):
        return float(x.mean()) if len(x) else None

    def ks(a, b):
        return float(ks_2samp(a, b).statistic) if len(a) and len(b) else None

    return {
        "visits_per_patient_mean": mean(other.visits_per_patient),
        "codes_per_visit_mean": mean(other.codes_per_visit),
        "visits_per_patient_ks": ks(train.visits_per_patient, other.visits_per_patient),
        "codes_per_visit_ks": ks(train.codes_per_visit, other.codes_per_visit),
    }
