"""The agreed figures on the real shared data: these must hold exactly."""
from __future__ import annotations

import pytest

from promptehr.model.data import dataset_stats, detect_format, load_patients


@pytest.mark.parametrize(
    "folder, fmt, patients, visits, codes, by_system",
    [
        ("mimic3-demo", "mimic3", 100, 129, 581, (581, 0)),
        ("mimic4-demo", "mimic4", 100, 275, 1474, (740, 734)),  # both ICD versions
        ("mimic4-demo/hosp", "mimic4", 100, 275, 1474, (740, 734)),
        ("desynpuf-sample/1-sample-10000", "desynpuf", 3268, 5768, 2806, (2806, 0)),
        ("desynpuf-sample", "desynpuf", 19461, 34373, 4626, (4626, 0)),
    ],
)
def test_acceptance_counts(shared_data, folder, fmt, patients, visits, codes, by_system):
    assert detect_format(shared_data / folder) == fmt
    stats = dataset_stats(load_patients(shared_data / folder))
    assert (stats["patients"], stats["visits"], stats["codes"]) == (patients, visits, codes)
    assert stats["codes_by_system"] == dict(zip(("icd9", "icd10"), by_system))


@pytest.mark.parametrize("system, patients, visits, codes", [("icd9", 76, 152, 740), ("icd10", 44, 123, 734)])
def test_mimic4_demo_one_version(shared_data, system, patients, visits, codes):
    """code_system keeps one version's admissions: "icd9" is the ICD-9-only reading of earlier versions."""
    stats = dataset_stats(load_patients(shared_data / "mimic4-demo", code_system=system))
    assert (stats["patients"], stats["visits"], stats["codes"]) == (patients, visits, codes)
    assert stats["codes_by_system"][system] == codes


def test_mimic3_demo_figures(shared_data):
    ps = load_patients(shared_data / "mimic3-demo")
    stats = dataset_stats(ps)
    assert stats["diagnosis_rows"] == 1761  # no repeated code inside a demo admission
    assert stats["sex"] == {"F": 55, "M": 45}
    assert stats["patients_with_2plus_visits"] == 14 and stats["visits_per_patient_max"] == 15
    assert stats["age"]["min"] == 17 and stats["age"]["max"] == 90


def test_patients_are_sorted_and_well_formed(shared_data):
    for folder in ("mimic3-demo", "mimic4-demo", "desynpuf-sample/1-sample-10000"):
        ps = load_patients(shared_data / folder)
        assert [p.id for p in ps] == sorted(p.id for p in ps)
        for p in ps:
            assert p.sex in ("M", "F") and 0 <= p.age <= 90
            assert p.visits and all(v for v in p.visits)
            assert all(len(v) == len(set(v)) for v in p.visits)
            assert all(isinstance(c, str) and c == c.strip() for v in p.visits for c in v)


def test_several_paths_load_together(shared_data):
    ps = load_patients([shared_data / "mimic3-demo", shared_data / "desynpuf-sample/1-sample-10000"])
    assert len(ps) == 100 + 3268
    assert [p.id for p in ps] == sorted(p.id for p in ps)
