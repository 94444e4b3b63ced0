"""Model-based scores through a plain callable interface, so this package never imports torch.

The model team's scorer (model.evaluation.scorer.load_scorer) is any object with
    perplexity(patients) -> {"masked": float, "next_visit": float, "masked_median_of_medians": float, ...}
    reconstruct(prefixes: list[Patient]) -> list[Patient]
where each reconstructed record starts with the codes of its prefix (same order) and continues them.
Reconstruction as in the research system: keep the first half of a holdout patient's codes (visit
structure kept), let the model complete the record, and compare the completed codes with the true
second half by Jaccard. The research system reports 0.40-0.45.

Both run on a seeded subsample of the holdout when it has more than `max_patients` (the report records
the size): the model pass costs ~19 ms per patient on one CPU thread (small preset, DE-SynPUF: the
1,990-patient holdout in 36.9 s), so MODEL_PATIENTS keeps a CPU report's model scores under a minute.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from promptehr.model.patient import Patient


class ModelScorer(Protocol):
    def perplexity(self, patients: list[Patient]) -> dict[str, float]: ...

    def reconstruct(self, prefixes: list[Patient]) -> list[Patient]: ...


def flat_codes(p: Patient) -> list[str]:
    return [c for v in p.visits for c in v]


def split_half(p: Patient) -> tuple[Patient, list[str]]:
    """(the patient cut after the first half of its codes, the codes of the second half).

    The first half is floor(n / 2) codes, so a patient with 3 codes keeps 1 and must complete 2.
    """
    keep = len(flat_codes(p)) // 2
    visits: list[list[str]] = []
    left = keep
    for v in p.visits:
        if left <= 0:
            break
        visits.append(list(v[:left]))
        left -= len(v[:left])
    n = len(visits)  # the times of the visits kept (the last one's stay is its whole stay)
    return Patient(id=p.id, age=p.age, sex=p.sex, visits=visits,
                   visit_days=p.visit_days[:n] if p.visit_days is not None else None,
                   los_days=p.los_days[:n] if p.los_days is not None else None), flat_codes(p)[keep:]


def jaccard(a: set, b: set) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def reconstruction_jaccard(prefixes: list[Patient], completed: list[Patient], truths: list[list[str]]) -> float | None:
    """Mean Jaccard between the codes the model added after each prefix and the true second half."""
    if len(prefixes) != len(completed):
        raise ValueError(f"scorer returned {len(completed)} records for {len(prefixes)} prefixes")
    scores = [jaccard(set(flat_codes(c)[len(flat_codes(p)):]), set(t)) for p, c, t in zip(prefixes, completed, truths)]
    return float(np.mean(scores)) if scores else None


MODEL_PATIENTS = {"cpu": 2000, "cuda": 10000}  # holdout patients scored at most, per device kind


def model_patients_for(device: str) -> int:
    """The subsample size the report scores on this device ("cuda:1" -> the cuda figure)."""
    return MODEL_PATIENTS["cuda" if str(device).startswith("cuda") else "cpu"]


def scored_patients(holdout: list[Patient], max_patients: int | None, seed: int) -> list[Patient]:
    """The whole holdout, or a seeded subsample of max_patients of it (holdout order kept)."""
    if max_patients is None or len(holdout) <= max_patients:
        return list(holdout)
    rows = np.sort(np.random.default_rng(seed).choice(len(holdout), max_patients, replace=False))
    return [holdout[i] for i in rows]


def model_section(scorer: ModelScorer, holdout: list[Patient], max_patients: int | None = None, seed: int = 0) -> dict:
    """Perplexity on the (subsampled) holdout and reconstruction Jaccard on its patients with >= 2 codes.
    A model that learned time scores records with their times (`scorer.time_fields`): holdout patients
    without them are left out, and `note` says how many."""
    need = tuple(getattr(scorer, "time_fields", ()))
    usable = [p for p in holdout if all(getattr(p, f) is not None for f in need)]
    note = None
    if len(usable) < len(holdout):
        note = (f"{len(holdout) - len(usable)} of {len(holdout)} holdout patients have no {' or '.join(need)}: the model "
                f"learned time and is scored on records with their times, so they are left out")
    if not usable:
        return {"perplexity": {}, "reconstruction_jaccard": None, "reconstruction_patients": 0, "patients": 0,
                "holdout_patients": len(holdout), "note": note}
    scored = scored_patients(usable, max_patients, seed)
    ppl = {k: (float(v) if v is not None else None) for k, v in scorer.perplexity(scored).items()}
    eligible = [p for p in scored if len(flat_codes(p)) >= 2]
    halves = [split_half(p) for p in eligible]
    prefixes = [h[0] for h in halves]
    completed = scorer.reconstruct(prefixes) if prefixes else []
    return {
        "perplexity": ppl,
        "reconstruction_jaccard": reconstruction_jaccard(prefixes, completed, [h[1] for h in halves]),
        "reconstruction_patients": len(prefixes),
        "patients": len(scored),
        "holdout_patients": len(holdout),
        "note": note,
    }
