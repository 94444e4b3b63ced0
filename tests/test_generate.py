"""Generation end to end with a tiny model trained once for this module on DE-SynPUF sample 1:
validity of a 2,000-patient cohort, byte-identical output across batch sizes, seeds, required codes,
shards, exports through the CLI, and the cohort spec."""
from __future__ import annotations

import itertools
import json
import zipfile
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptehr.cli.main import main
from promptehr.model.data import load_patients
from promptehr.model.generation.cohort import (
    AgeSpec,
    CohortSpec,
    check_feasible,
    demographics,
    generate_cohort,
)
from promptehr.model.generation.draw import SamplingOptions
from promptehr.model.nn.checkpoint import load_checkpoint
from promptehr.model.rules import is_allowed, violations

N = 2000
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}
# slow: the module fixture trains a model (80 steps) and tests generate cohorts of 2,000
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # one_thread: tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, shared_data, one_thread):
    out = tmp_path_factory.mktemp("tiny") / "model"
    rc = main(["train", "--data", str(shared_data / "desynpuf-sample" / "1-sample-10000"), "--preset", "tiny",
               "--out", str(out), "--max-steps", "80", "--device", "cpu"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def bundle(model_dir):
    return load_checkpoint(model_dir, "cpu")


def generate(model_dir, out, *extra) -> int:
    return main(["generate", "--model", str(model_dir), "--out", str(out), *map(str, extra)])


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def cohort_256(model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "seed1_b256.jsonl"
    assert generate(model_dir, path, "--n", N, "--seed", 1, "--batch-size", 256) == 0
    return path


def test_2000_patients_are_valid_and_distinct(cohort_256, bundle):
    vocab = bundle[1]
    patients = read_jsonl(cohort_256)
    assert len(patients) == N and len({p["patient_id"] for p in patients}) == N
    known = set(vocab.codes)
    for p in patients:
        assert p["sex"] in ("M", "F") and 0 <= p["age"] <= 90
        assert p["visits"] and all(p["visits"])
        for visit in p["visits"]:
            assert len(visit) == len(set(visit)), "duplicate code in a visit"
            for code in visit:
                assert code in known, code
                assert not violations(code, p["sex"], p["age"]), (code, p["sex"], p["age"])
    distinct = len({json.dumps(p["visits"]) for p in patients}) / N
    assert distinct >= 0.95, distinct


def test_same_seed_same_bytes_at_batch_64(cohort_256, model_dir, tmp_path):
    path = tmp_path / "seed1_b64.jsonl"
    assert generate(model_dir, path, "--n", N, "--seed", 1, "--batch-size", 64) == 0
    assert path.read_bytes() == cohort_256.read_bytes()


def test_another_seed_another_cohort(cohort_256, model_dir, tmp_path):
    path = tmp_path / "seed2.jsonl"
    assert generate(model_dir, path, "--n", 200, "--seed", 2) == 0
    a = [json.dumps(p["visits"]) for p in read_jsonl(cohort_256)[:200]]
    b = [json.dumps(p["visits"]) for p in read_jsonl(path)]
    assert sum(x != y for x, y in zip(a, b)) >= 190


def test_required_code_in_every_patient(model_dir, tmp_path):
    path = tmp_path / "chf.jsonl"
    assert generate(model_dir, path, "--n", 300, "--seed", 5, "--require", "4280") == 0
    patients = read_jsonl(path)
    assert len(patients) == 300
    assert all("4280" in p["visits"][0] for p in patients)
    assert all(len(v) == len(set(v)) for p in patients for v in p["visits"])


def test_required_code_redraws_demographics(bundle):
    # a pregnancy code: only women aged 10-55 may carry it, so the cohort is drawn among them
    code = next(c for c in bundle[1].codes if c[:3] in {str(k) for k in range(630, 680)} and is_allowed(c, "F", 30))
    spec = CohortSpec(required_codes=(code,), female=0.5)
    patients = generate_cohort(bundle, spec, 40, seed=3, batch_size=40)
    assert all(p.sex == "F" and 10 <= p.age <= 55 and code in p.visits[0] for p in patients)


@settings(max_examples=8, **SETTINGS)
@given(cuts=st.lists(st.integers(0, 45), max_size=3), batch=st.sampled_from([1, 7, 32, 50]))
def test_shards_concatenate_to_one_go(bundle, cuts, batch):
    n = 45
    spec = CohortSpec(age=AgeSpec("histogram", bins=(18, 45, 65, 91), weights=(1, 2, 3)), female=0.6)
    whole = generate_cohort(bundle, spec, n, seed=11, batch_size=64)
    edges = [0, *sorted(cuts), n]
    shards = [p for lo, hi in itertools.pairwise(edges) for p in generate_cohort(bundle, spec, n, seed=11, start=lo, stop=hi, batch_size=batch)]
    assert shards == whole


def test_frequency_code_sampler_is_valid(bundle):
    spec = CohortSpec(sampling=SamplingOptions(code_sampler="frequency"))
    patients = generate_cohort(bundle, spec, 100, seed=4)
    vocab = bundle[1]
    for p in patients:
        for v in p.visits:
            assert len(v) == len(set(v)) and all(c in vocab.codes for c in v)
            assert all(not violations(c, p.sex, p.age) for c in v)
    assert len({json.dumps(p.visits) for p in patients}) >= 95


def test_mimic3_and_csv_exports_read_back(model_dir, tmp_path):
    assert generate(model_dir, tmp_path / "c.jsonl", "--n", 50, "--seed", 9) == 0
    assert generate(model_dir, tmp_path / "c.zip", "--n", 50, "--seed", 9) == 0
    assert generate(model_dir, tmp_path / "c.csv", "--n", 50, "--seed", 9) == 0
    want = read_jsonl(tmp_path / "c.jsonl")
    zipfile.ZipFile(tmp_path / "c.zip").extractall(tmp_path / "mimic")
    mimic = {p.id: p for p in load_patients(tmp_path / "mimic")}
    long = {p.id: p for p in load_patients(tmp_path / "c.csv")}
    for i, p in enumerate(want):
        for q in (mimic[str(i + 1)], long[p["patient_id"]]):
            assert (q.age, q.sex, q.visits) == (p["age"], p["sex"], p["visits"])


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n"),
    (["--n", "5", "--age", "40", "--age-mean", "50"], "one age distribution"),
    (["--n", "5", "--age-bins", "0", "50", "90"], "go together"),
    (["--n", "5", "--age-bins", "0", "50", "90", "--age-weights", "1"], "weights"),
    (["--n", "5", "--female", "1.5"], "female"),
    (["--n", "5", "--temperature", "0"], "temperature"),
    (["--n", "5", "--top-p", "0"], "top_p"),
    (["--n", "5", "--require", "99999"], "vocabulary"),
    (["--n", "5", "--require", "V270", "--female", "0"], "rule"),
])
def test_bad_arguments_exit_2(model_dir, tmp_path, capsys, args, message):
    assert generate(model_dir, tmp_path / "x.jsonl", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


# ---- cohort spec (no model) ---------------------------------------------------------------------

def test_spec_from_api_body_round_trips():
    body = {"age": {"distribution": "normal", "mean": 70, "sd": 10, "min": 18, "max": 90}, "sex": {"female": 0.55},
            "required_codes": ["250.00"], "sampling": {"temperature": 1.0, "top_p": 0.95}}
    spec = CohortSpec.from_dict(body)
    assert spec.required_codes == ("25000",) and spec.female == 0.55 and spec.age.mean == 70
    assert CohortSpec.from_dict(spec.to_dict()) == spec
    for bad in ({"age": {"distribution": "uniform"}}, {"sex": {"female": -1}}, {"colour": 1},
                {"age": {"distribution": "histogram", "bins": [0, 10], "weights": [1, 2]}}):
        with pytest.raises((ValueError, TypeError)):
            CohortSpec.from_dict(bad)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**40), mean=st.floats(0, 90), sd=st.floats(0, 40), lo=st.integers(0, 45), span=st.integers(0, 45))
def test_normal_ages_are_whole_years_in_bounds_and_reproducible(seed, mean, sd, lo, span):
    spec = CohortSpec(age=AgeSpec("normal", mean=mean, sd=sd, min=lo, max=lo + span))
    ages = [demographics(spec, seed, i)[0] for i in range(20)]
    assert all(lo <= a <= lo + span and a == int(a) for a in ages)
    assert ages == [demographics(spec, seed, i)[0] for i in range(20)]


def test_histogram_and_sex_shares():
    spec = CohortSpec(age=AgeSpec("histogram", bins=(0, 18, 45, 65, 90), weights=(0, 1, 0, 3)), female=0.3)
    demo = [demographics(spec, 7, i) for i in range(4000)]
    ages = np.array([a for a, _ in demo])
    assert ((ages >= 18) & (ages < 45)).mean() == pytest.approx(0.25, abs=0.03)
    assert ((ages >= 65) & (ages <= 90)).mean() == pytest.approx(0.75, abs=0.03)
    assert Counter(s for _, s in demo)["F"] / 4000 == pytest.approx(0.3, abs=0.03)
    fixed = CohortSpec(age=AgeSpec("fixed", value=40.7))
    assert {demographics(fixed, 1, i)[0] for i in range(10)} == {40.0}


def test_infeasible_required_codes_are_refused():
    with pytest.raises(ValueError):
        check_feasible(CohortSpec(required_codes=("V270",), female=0.0))
    with pytest.raises(ValueError):
        check_feasible(CohortSpec(age=AgeSpec("fixed", value=70), required_codes=("650",), female=1.0))
    check_feasible(CohortSpec(required_codes=("650",), female=0.5))
