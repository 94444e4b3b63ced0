"""Privacy: does the cohort copy or sit unusually close to the training patients?

Records are compared as sets of codes over all visits (multi-hot CSR rows); the distance is Jaccard,
1 - |a & b| / |a | b|. Nearest neighbours come from sparse products in chunks: |a & b| = A @ B.T,
|a | b| = |a| + |b| - |a & b|, so no Python loop ever runs over pairs of records. The vocabulary
(exact copy, membership inference, distance to closest record, NNAAR) is that of synthcity/SDMetrics.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from promptehr.model.patient import Patient

CHUNK_CELLS = 4_000_000  # distances per block: a few float32 arrays of 16 MB, whatever the cohort sizes


def record_key(p: Patient) -> tuple:
    """The visit list as compared for copies: visits in order, codes within a visit as a set."""
    return tuple(tuple(sorted(set(v))) for v in p.visits)


def is_multivisit(p: Patient) -> bool:
    return len(p.visits) >= 2 or sum(len(set(v)) for v in p.visits) >= 5


def exact_copies(others: list[Patient], train: list[Patient]) -> np.ndarray:
    """Bool per record of `others`: its visit list equals some training patient's."""
    seen = {record_key(p) for p in train}
    return np.asarray([record_key(p) in seen for p in others], dtype=bool)


def exact_copy_rates(others: list[Patient], train: list[Patient]) -> dict[str, float | None]:
    copies = exact_copies(others, train)
    multi = np.asarray([is_multivisit(p) for p in others], dtype=bool)
    return {
        "exact_copy_rate": float(copies.mean()) if len(copies) else None,
        "exact_copy_rate_multivisit": float(copies[multi].mean()) if multi.any() else None,
    }


def nearest(a: sp.csr_matrix, b: sp.csr_matrix, *, exclude_self: bool = False, chunk: int | None = None):
    """Jaccard distance from each row of `a` to its nearest row of `b`, and per row of `b` to `a`.

    Returns (a_to_b, b_to_a). With exclude_self (a is b) the diagonal is skipped: leave-one-out.
    Two empty records are at distance 0. Rows of `a` go in blocks of `chunk` (default: as many as
    keep a block under CHUNK_CELLS distances), so memory does not grow with len(a).
    """
    chunk = chunk or max(1, CHUNK_CELLS // max(b.shape[0], 1))
    size_a = np.asarray(a.sum(axis=1)).ravel().astype(np.float32)
    size_b = np.asarray(b.sum(axis=1)).ravel().astype(np.float32)
    bt = b.T.tocsc()
    a_to_b = np.full(a.shape[0], np.inf, dtype=np.float32)
    b_to_a = np.full(b.shape[0], np.inf, dtype=np.float32)
    for lo in range(0, a.shape[0], chunk):
        hi = min(lo + chunk, a.shape[0])
        inter = (a[lo:hi] @ bt).toarray().astype(np.float32, copy=False)
        union = size_a[lo:hi, None] + size_b[None, :] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            dist = np.where(union > 0, 1.0 - inter / union, np.float32(0.0))
        if exclude_self:
            idx = np.arange(lo, hi)
            dist[idx - lo, idx] = np.inf
        if dist.shape[1]:
            a_to_b[lo:hi] = dist.min(axis=1)
            np.minimum(b_to_a, dist.min(axis=0), out=b_to_a)
    return a_to_b, b_to_a


def mia_auc(member_to_synth: np.ndarray, nonmember_to_synth: np.ndarray) -> float | None:
    """Membership inference: the attacker calls a record a member when a synthetic record is near it."""
    if len(member_to_synth) == 0 or len(nonmember_to_synth) == 0:
        return None
    y = np.r_[np.ones(len(member_to_synth)), np.zeros(len(nonmember_to_synth))]
    score = -np.r_[member_to_synth, nonmember_to_synth]
    return float(roc_auc_score(y, score))


def closer_to_train_share(synth_to_train: np.ndarray, synth_to_holdout: np.ndarray) -> float | None:
    """Share of synthetic records nearer to train than to an equal-size holdout; ties count half."""
    if len(synth_to_train) == 0:
        return None
    return float(np.mean((synth_to_train < synth_to_holdout) + 0.5 * (synth_to_train == synth_to_holdout)))


def adversarial_accuracy(real: sp.csr_matrix, synth: sp.csr_matrix) -> float | None:
    """Yale et al.'s AA: how often a record's nearest neighbour is in its own set rather than the other.

    AA = 1/2 (mean[d_RS > d_RR] + mean[d_SR > d_SS]), with d_RR, d_SS leave-one-out. ~0.5 when the
    two sets are indistinguishable; low when synthetic records sit on top of real ones.
    """
    if real.shape[0] < 2 or synth.shape[0] < 2:
        return None
    d_rs, d_sr = nearest(real, synth)
    d_rr, _ = nearest(real, real, exclude_self=True)
    d_ss, _ = nearest(synth, synth, exclude_self=True)
    return float(0.5 * (np.mean(d_rs > d_rr) + np.mean(d_sr > d_ss)))


def nnaar(train: sp.csr_matrix, holdout: sp.csr_matrix, synth: sp.csr_matrix) -> float | None:
    """Nearest-neighbour adversarial accuracy risk: AA(holdout, synth) - AA(train, synth).

    All three at the same size. Training records that the generator memorised have a synthetic
    neighbour nearer than any real one, which lowers AA(train) only, so the difference grows.
    """
    aa_test = adversarial_accuracy(holdout, synth)
    aa_train = adversarial_accuracy(train, synth)
    if aa_test is None or aa_train is None:
        return None
    return aa_test - aa_train
