"""dataset_stats on hand-made patients, where every figure can be checked by eye."""
from __future__ import annotations

import json
import math

from promptehr.model.data import dataset_stats
from promptehr.model.patient import Patient


def test_figures():
    ps = [
        Patient("a", 30, "F", [["1", "2"], ["2"]]),
        Patient("b", 90, "M", [["3", "1", "4"]]),
        Patient("c", 60, "F", [["5"]]),
    ]
    s = dataset_stats(ps)
    assert (s["patients"], s["visits"], s["codes"], s["diagnosis_rows"]) == (3, 4, 5, 7)
    assert s["visits_per_patient_mean"] == round(4 / 3, 4) and s["codes_per_visit_mean"] == 1.75
    assert s["age"] == {"min": 30, "max": 90, "mean": 60, "median": 60}
    assert s["sex"] == {"F": 2, "M": 1}
    assert s["patients_with_2plus_visits"] == 1


def test_unknown_demographics_and_empty_input_stay_valid_json():
    s = dataset_stats([Patient("a", math.nan, "U", [["1"]])])
    assert s["age"]["mean"] is None and s["sex"] == {"F": 0, "M": 0, "U": 1}
    json.dumps(dataset_stats([]), allow_nan=False)
