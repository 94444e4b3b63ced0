"""Does the cohort come from the same source as the real data it is scored against?

A MIMIC-III cohort scored against DE-SynPUF fails measures for a reason no measure names: unlike records.
The report warns (Report.warnings) when, for the cohort and, given the model's training code counts
(`promptehr evaluate --model`: vocab.json), for the model's training data:
- `code_systems`: the code systems differ (ICD-9-CM vs ICD-10-CM, model/codes.py);
- `unseen_codes`: at least UNSEEN_SHARE of the distinct codes never occur in the real data (train + holdout);
- `code_overlap`: the code distributions overlap less than OVERLAP_MIN, and less than a real sample of the
  same size does (the holdout against train) minus OVERLAP_MARGIN. Overlap = sum over codes of
  min(p, q), p and q the shares of (visit, code) slots: 1 - total variation distance, 1 for equal mixes.

Why the overlap: MIMIC-III and DE-SynPUF are both ICD-9-CM and DE-SynPUF's 4,000-odd codes cover 90% of
a MIMIC-III cohort's, so unseen codes alone do not tell them apart; their mixes differ. The thresholds
were measured (docs/evaluation.md, "Different sources"). A poor generator may trip `code_overlap` too;
the message says so.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from promptehr.model.codes import NAMES, systems_in
from promptehr.model.evaluation.schema import ReportWarning
from promptehr.model.patient import Patient

UNSEEN_SHARE = 0.5  # same source: at most 0.31 (13 MIMIC-III holdout patients); other sources 0.41-0.81
OVERLAP_MIN = 0.6  # same source: 0.70-0.83; MIMIC-III vs DE-SynPUF: 0.50-0.55
OVERLAP_MARGIN = 0.1  # below a same-size real sample by more than this


def code_counts(patients: Iterable[Patient]) -> Counter:
    """(visit, code) slots per code: a code listed twice in a visit counts once."""
    return Counter(c for p in patients for v in p.visits for c in set(v))


def overlap(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """sum_c min(p_c, q_c) of the two normalised count maps; 0 when either is empty."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0
    return float(sum(min(n / na, b.get(c, 0) / nb) for c, n in a.items()))


def _systems(codes) -> str:
    return " and ".join(NAMES[s] for s in systems_in(codes)) or "no codes"


def compare(counts: Mapping[str, float], real: Counter, train: Counter, reference: float,
            whose: str) -> list[dict]:
    """The warnings for one code count map (the cohort's or the model's) against the real data's."""
    out, tail = [], "they look like different sources, so the measures compare unlike records"
    if counts and systems_in(counts) != systems_in(real):
        out.append({"kind": "code_systems", "about": whose,
                    "message": f"{whose} uses {_systems(counts)}, the real data {_systems(real)}: {tail}"})
    unseen = sum(c not in real for c in counts) / len(counts) if counts else 0.0
    if unseen >= UNSEEN_SHARE:
        out.append({"kind": "unseen_codes", "about": whose, "value": round(unseen, 4), "threshold": UNSEEN_SHARE,
                    "message": f"{unseen:.0%} of the {len(counts)} distinct codes of {whose} never occur in the real "
                               f"data (warned from {UNSEEN_SHARE:.0%}): {tail}"})
    share = overlap(counts, train)
    if counts and share < OVERLAP_MIN and share < reference - OVERLAP_MARGIN:
        out.append({"kind": "code_overlap", "about": whose, "value": round(share, 4), "reference": round(reference, 4),
                    "threshold": OVERLAP_MIN,
                    "message": f"the code mix of {whose} overlaps the real data's by {share:.2f} (a real sample of "
                               f"the same size: {reference:.2f}; warned below {OVERLAP_MIN}): {tail}, or the "
                               "generator is far off"})
    return out


def source_warnings(synthetic: list[Patient], train: list[Patient], holdout: list[Patient],
                    model_counts: Mapping[str, float] | None = None, seed: int = 0) -> list[ReportWarning]:
    """The cohort's warnings, then those of the model's training counts (when given), against the real data."""
    tr, ho = code_counts(train), code_counts(holdout)
    real = tr + ho
    # The real sample's overlap at the cohort's size (overlap grows with sample size).
    n = min(len(synthetic), len(holdout))
    rows = np.sort(np.random.default_rng(seed).choice(len(holdout), n, replace=False)) if n < len(holdout) else None
    same_size = code_counts([holdout[i] for i in rows]) if rows is not None else ho
    out = compare(code_counts(synthetic), real, tr, overlap(same_size, tr), "the cohort")
    if model_counts is not None:
        out += compare(dict(model_counts), real, tr, overlap(ho, tr), "the model's training data")
    return [ReportWarning(**w) for w in out]
