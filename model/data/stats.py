"""Summary figures of a loaded data set: what `promptehr data stats` prints and POST /datasets stores."""
from __future__ import annotations

from collections import Counter

import numpy as np

from promptehr.model.codes import SYSTEMS, system_of
from promptehr.model.patient import Patient


def _number(x) -> float | None:
    # JSON has no NaN: an undefined figure (no ages known) is null.
    x = float(x)
    return None if np.isnan(x) else round(x, 4)


def dataset_stats(patients: list[Patient]) -> dict:
    visits_per_patient = np.array([len(p.visits) for p in patients], dtype=np.int64)
    codes_per_visit = np.array([len(v) for p in patients for v in p.visits], dtype=np.int64)
    ages = np.array([p.age for p in patients], dtype=float)
    known = ages[~np.isnan(ages)]
    sex = Counter(p.sex for p in patients)
    codes = {c for p in patients for v in p.visits for c in v}
    by_system = Counter(system_of(c) for c in codes)
    n, nv = len(patients), len(codes_per_visit)
    return {
        "patients": n,
        "visits": nv,
        "codes": len(codes),
        "codes_by_system": {s: by_system.get(s, 0) for s in SYSTEMS},  # distinct codes of each system
        "diagnosis_rows": int(codes_per_visit.sum()),
        "visits_per_patient_mean": _number(visits_per_patient.mean()) if n else None,
        "visits_per_patient_max": int(visits_per_patient.max()) if n else None,
        "patients_with_2plus_visits": int((visits_per_patient >= 2).sum()),
        "codes_per_visit_mean": _number(codes_per_visit.mean()) if nv else None,
        "codes_per_visit_median": _number(np.median(codes_per_visit)) if nv else None,
        "codes_per_visit_max": int(codes_per_visit.max()) if nv else None,
        "age": {k: (_number(f(known)) if len(known) else None) for k, f in
                (("min", np.min), ("max", np.max), ("mean", np.mean), ("median", np.median))},
        # M and F always present so consumers can index them; any other value (long format "U") is added.
        "sex": {"F": sex.pop("F", 0), "M": sex.pop("M", 0), **dict(sorted(sex.items()))},
    }
