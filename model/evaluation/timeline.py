"""Timeline: do the cohort's visits come at the real data's intervals, and last as long?

A record's time is Patient.visit_days and Patient.los_days (model/patient.py: whole calendar days from
the first visit's start to each visit's start, and from each visit's start to its end). Per cohort,
pooled over its timed records (both fields present):

    gaps    visit_days[k] - visit_days[k-1] for k >= 1: days between consecutive visit starts
    stays   every los_days entry (0 = a same-day visit)
    spans   per record with visits, max_k(visit_days[k] + los_days[k]): days from the first visit's
            start to the last visit's end (the latest end, which an earlier long stay can hold)
    codes   each visit's code count, beside its stay

Measures, of synthetic against train and, as the limit, of the holdout against train (fidelity's shape):
`gap_ks` / `stay_ks` (scipy ks_2samp statistic), `gap_wasserstein_days` / `stay_wasserstein_days`
(scipy wasserstein_distance, in days), and the cohort's own `readmit_30d` (share of gaps <= 30 days),
`span_median_days` and `codes_stay_spearman` (Spearman's rho of code count and stay, per visit),
beside train's value (`reference`). A measure without data (no gaps: every record has one visit) is None.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp, spearmanr, wasserstein_distance

from promptehr.model.patient import Patient

READMIT_DAYS = 30  # the usual readmission window: a visit starting at most 30 days after the previous one

NOT_LEARNED = "the model did not learn a timeline: the records carry no visit_days"
NO_REAL_DATES = "not measured: the real data has no dates"


@dataclass
class Times:
    """One cohort's pooled time arrays (module docstring) and how many of its records are timed."""

    gaps: np.ndarray
    stays: np.ndarray
    spans: np.ndarray
    codes: np.ndarray  # code count per visit, aligned with stays
    timed: int
    untimed: int


def is_timed(p: Patient) -> bool:
    return p.visit_days is not None and p.los_days is not None


def times_of(patients: list[Patient]) -> Times:
    timed = [p for p in patients if is_timed(p)]
    gaps = [b - a for p in timed for a, b in zip(p.visit_days, p.visit_days[1:])]
    stays = [d for p in timed for d in p.los_days]
    spans = [max(s + d for s, d in zip(p.visit_days, p.los_days)) for p in timed if p.visits]
    codes = [len(v) for p in timed for v in p.visits]
    return Times(gaps=np.asarray(gaps, dtype=np.float64), stays=np.asarray(stays, dtype=np.float64),
                 spans=np.asarray(spans, dtype=np.float64), codes=np.asarray(codes, dtype=np.float64),
                 timed=len(timed), untimed=len(patients) - len(timed))


def ks(a: np.ndarray, b: np.ndarray) -> float | None:
    return float(ks_2samp(a, b).statistic) if len(a) and len(b) else None


def wasserstein(a: np.ndarray, b: np.ndarray) -> float | None:
    return float(wasserstein_distance(a, b)) if len(a) and len(b) else None


def readmit_share(gaps: np.ndarray) -> float | None:
    return float(np.mean(gaps <= READMIT_DAYS)) if len(gaps) else None


def median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if len(x) else None


def codes_stay_spearman(t: Times) -> float | None:
    """Spearman's rho of per-visit code count and stay; None where either is constant (rho undefined)."""
    if len(t.stays) < 2 or np.ptp(t.stays) == 0 or np.ptp(t.codes) == 0:
        return None
    return float(spearmanr(t.codes, t.stays).statistic)


def timeline_measures(train: Times, other: Times) -> dict[str, float | None]:
    """The distances of `other`'s gaps and stays from train's, and `other`'s own shares, median, rho."""
    return {
        "gap_ks": ks(train.gaps, other.gaps),
        "gap_wasserstein_days": wasserstein(train.gaps, other.gaps),
        "stay_ks": ks(train.stays, other.stays),
        "stay_wasserstein_days": wasserstein(train.stays, other.stays),
        "readmit_30d": readmit_share(other.gaps),
        "span_median_days": median(other.spans),
        "codes_stay_spearman": codes_stay_spearman(other),
    }


# Measures that are the cohort's own figure: they stand beside train's value (the "rel" reference).
OWN_VALUES = ("readmit_30d", "span_median_days", "codes_stay_spearman")


def status(synthetic: Times, train: Times, holdout: Times) -> tuple[bool, bool, str | None]:
    """(learned, measured, note): learned when some synthetic record carries times; measured when, in
    addition, train and holdout do; the note says why not."""
    learned = synthetic.timed > 0
    real_dated = train.timed > 0 and holdout.timed > 0
    if not learned:
        return False, False, NOT_LEARNED + ("" if real_dated else "; the real data has no dates either")
    if not real_dated:
        return True, False, NO_REAL_DATES
    return True, True, None


def partial_messages(cohorts: dict[str, Times]) -> list[tuple[str, str, float]]:
    """(cohort, message, untimed share) for each cohort of which only some records carry times: the
    timeline is measured on the timed ones, and the user is told how many were left out."""
    out = []
    for name, t in cohorts.items():
        n = t.timed + t.untimed
        if t.timed and t.untimed:
            message = (f"{t.untimed} of {n} {name} records carry no visit_days or los_days: the timeline is "
                       f"measured on the other {t.timed}")
            out.append((name, message, t.untimed / n))
    return out
