"""End to end on the whole MIMIC-IV demo (both ICD versions): a tiny model generates both systems and
breaks no sex/age rule; `--map-to` trains one system. Through the CLI, as a user runs it."""
from __future__ import annotations

import json

import pytest

from promptehr.model import codes, rules
from tests.test_data_cli import promptehr

pytestmark = pytest.mark.slow  # both tests train a model through the CLI


@pytest.fixture(scope="module")
def mixed_model(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("m4") / "model"
    r = promptehr("train", "--data", str(shared_data / "mimic4-demo"), "--preset", "tiny", "--epochs", "1",
                  "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_a_model_of_mixed_data_generates_both_systems_within_the_rules(mixed_model, tmp_path):
    vocab = json.loads((mixed_model / "vocab.json").read_text())
    assert vocab["code_systems"] == ["icd9", "icd10"]
    cohort = tmp_path / "c.jsonl"
    r = promptehr("generate", "--model", str(mixed_model), "--n", "300", "--seed", "1", "--threads", "1", "--out", str(cohort))
    assert r.returncode == 0, r.stderr
    patients = [json.loads(line) for line in cohort.read_text().splitlines()]
    generated = [(p, c) for p in patients for v in p["visits"] for c in v]
    assert len(patients) == 300 and {codes.system_of(c) for _, c in generated} == {"icd9", "icd10"}
    trained = set(vocab["codes"])
    for p, c in generated:
        assert codes.is_valid(c) and (codes.is_known(c) or c in trained)
        assert rules.violations(c, p["sex"], p["age"]) == [], (c, p["sex"], p["age"])
    # The cohort is old enough and mixed enough for the rules to have had work to do.
    assert any(rules.rules_for(c) for c in trained if c.startswith("icd10:"))


def test_map_to_trains_one_system(shared_data, tmp_path):
    out = tmp_path / "model"
    r = promptehr("train", "--data", str(shared_data / "mimic4-demo"), "--map-to", "icd10", "--preset", "tiny",
                  "--max-steps", "1", "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "740 codes mapped to ICD-10-CM" in r.stderr and "734 codes already ICD-10-CM" in r.stderr
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["code_systems"] == ["icd10"] and all(c.startswith("icd10:") for c in vocab["codes"])
