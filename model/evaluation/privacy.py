"""Privacy: does the cohort copy or sit unusually close to the training patients?

Records are compared as sets of codes over all visits (multi-hot CSR rows); the distance is Jaccard,
1 - |a & b| / |a | b|. With times (`times=True`, the report's `privacy_times`), a record is its codes
plus its time: an exact copy needs the same visit_days and los_days too, and each record's set gains
the items ("gap", bin) for every visit after the first and ("stay", bin) for every visit, bins of
model/tokens/time_bins.py (two extra blocks of N_BINS columns). Without it (the default) a copy of a
training record's codes with other dates is still a copy. Nearest neighbours come from sparse products in chunks: |a & b| = A @ B.T,
|a | b| = |a| + |b| - |a & b|, so no Python loop ever runs over pairs of records. The vocabulary
(exact copy, membership inference, distance to closest record, NNAAR) is that of synthcity/SDMetrics.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from promptehr.model.patient import Patient
from promptehr.model.tokens.time_bins import N_BINS, bin_of

CHUNK_CELLS = 4_000_000  # distances per block: a few float32 arrays of 16 MB, whatever the cohort sizes


CODES_ONLY = ("records are compared by their codes only: a copy of a training record's codes with other "
              "dates counts as a copy (the privacy_times option compares times too)")
WITH_TIMES = ("records are compared by their codes and their times: an exact copy has the same visit_days and "
              "los_days too, and the distances add each visit's binned gap and stay to the record's code set")


def record_key(p: Patient, times: bool = False) -> tuple:
    """The visit list as compared for copies: visits in order, codes within a visit as a set; with
    `times`, the visit days and stays as well."""
    codes = tuple(tuple(sorted(set(v))) for v in p.visits)
    return (codes, tuple(p.visit_days or ()), tuple(p.los_days or ())) if times else codes


def untimed_problem(cohorts: dict[str, list[Patient]]) -> str | None:
    """Why the cohorts cannot be compared with times (some record lacks visit_days or los_days), or None.

    Comparing an untimed record with times would count it as no copy of anything: a silent pass."""
    for name, patients in cohorts.items():
        missing = sum(p.visit_days is None or p.los_days is None for p in patients)
        if missing:
            return (f"privacy with times needs every record's visit_days and los_days; {missing} of "
                    f"{len(patients)} {name} records have none")
    return None


def time_matrix(patients: list[Patient]) -> sp.csr_matrix:
    """One row per patient: multi-hot ("gap", bin) in columns [0, N_BINS), ("stay", bin) in [N_BINS, 2 N_BINS)."""
    rows, cols = [], []
    for i, p in enumerate(patients):
        gaps = np.diff(np.asarray(p.visit_days, dtype=np.int64))
        items = np.unique(np.r_[bin_of(gaps), N_BINS + bin_of(p.los_days)]).astype(np.int64)
        rows.append(np.full(len(items), i))
        cols.append(items)
    r, c = (np.concatenate(x) if x else np.zeros(0, dtype=np.int64) for x in (rows, cols))
    return sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(len(patients), 2 * N_BINS))


def with_time_items(codes: sp.csr_matrix, patients: list[Patient]) -> sp.csr_matrix:
    """A cohort's code rows (counts.patient_matrix) with its time items as extra columns."""
    return sp.hstack([codes, time_matrix(patients)], format="csr", dtype=np.float32)


def is_multivisit(p: Patient) -> bool:
    return len(p.visits) >= 2 or sum(len(set(v)) for v in p.visits) >= 5


def exact_copies(others: list[Patient], train: list[Patient], times: bool = False) -> np.ndarray:
    """Bool per record of `others`: its visit list (and, with `times`, its days) equals some training patient's."""
    seen = {record_key(p, times) for p in train}
    return np.asarray([record_key(p, times) in seen for p in others], dtype=bool)


def exact_copy_rates(others: list[Patient], train: list[Patient], times: bool = False) -> dict[str, float | None]:
    copies = exact_copies(others, train, times)
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
