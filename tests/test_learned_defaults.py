"""Learned age/sex defaults: a cohort spec without age or sex takes the training population's
(model/generation/population.py), in `promptehr generate`, POST /cohorts + the generating worker, and the report.

The stumble: `promptehr generate` without age flags drew ages from normal(60, 20) whatever the model learned
(the DE-SynPUF model's patients are 72 on average)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from promptehr.model.generation.cohort import CohortSpec
from promptehr.model.generation.population import (
    LEARNED,
    OLD_DEFAULT,
    age_pmf,
    calibrated_stop_bias,
    fill_demographics,
    population_of,
    read_population,
    stop_bias_secant,
)
from promptehr.model.patient import Patient
from promptehr.model.training.card import (
    CALIBRATION_PATIENTS,
    CALIBRATION_ROUNDS,
    CALIBRATION_TOLERANCE,
    calibration_patients,
)

REPO = Path(__file__).resolve().parents[1]


def promptehr(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "promptehr.cli", "-q", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})


def cohort_stats(path: Path) -> tuple[float, float, int]:
    ps = [json.loads(line) for line in path.read_text().splitlines()]
    return float(np.mean([p["age"] for p in ps])), float(np.mean([p["sex"] == "F" for p in ps])), len(ps)


@pytest.fixture(scope="module")
def desynpuf_model(shared_data, tmp_path_factory) -> Path:
    """A tiny model trained 1 epoch on DE-SynPUF sample 1 (the `promptehr train` CLI, one thread)."""
    out = tmp_path_factory.mktemp("ds1") / "model"
    r = promptehr("train", "--data", str(shared_data / "desynpuf-sample" / "1-sample-10000"), "--preset", "tiny",
                  "--epochs", "1", "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_default_cohort_has_the_training_population_age_and_sex(desynpuf_model, tmp_path):
    population = read_population(desynpuf_model)
    assert population is not None and population.patients > 2000
    assert population.age_mean > 70  # DE-SynPUF is Medicare: far from the old default's 60
    cohort = tmp_path / "c.jsonl"
    r = promptehr("generate", "--model", str(desynpuf_model), "--n", "3000", "--seed", "1", "--threads", "1",
                  "--out", str(cohort))  # no --age*, no --female
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    mean, female, n = cohort_stats(cohort)
    assert n == 3000
    assert abs(mean - population.age_mean) <= 2.0, (mean, population.age_mean)
    assert abs(female - population.female) <= 0.03, (female, population.female)


@pytest.mark.slow
def test_a_checkpoint_without_population_keeps_the_old_default_and_warns(desynpuf_model, tmp_path):
    from promptehr.model.nn.checkpoint import CARD, POPULATION, load_checkpoint, write_manifest

    old = tmp_path / "old"
    shutil.copytree(desynpuf_model, old)
    (old / POPULATION).unlink()
    (old / CARD).unlink()
    write_manifest(old)  # as a checkpoint written before learned defaults
    load_checkpoint(old)  # still loads
    cohort = tmp_path / "c.jsonl"
    r = promptehr("generate", "--model", str(old), "--n", "400", "--seed", "1", "--threads", "1", "--out", str(cohort))
    assert r.returncode == 0, r.stderr
    warning = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "population.json" in warning[0] and "normal(60, 20)" in warning[0]
    mean, _, _ = cohort_stats(cohort)
    assert abs(mean - 60) < 4  # the old default, normal(60, 20) in [0, 90]
    # given flags need no default: no warning
    r = promptehr("generate", "--model", str(old), "--n", "5", "--age", "70", "--female", "0.5", "--threads", "1",
                  "--out", str(tmp_path / "d.jsonl"))
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_fill_demographics_records_where_age_and_sex_came_from():
    train = [Patient(id=str(i), age=a, sex=s, visits=[["4019"]]) for i, (a, s) in
             enumerate([(95, "F"), (71, "F"), (66, "M"), (5, "M")])]
    pop = population_of(train)
    assert pop.age_weights == (1, 0, 0, 0, 0, 0, 1, 1, 1) and pop.female == 0.5  # 95 is capped at 90
    r = fill_demographics({"required_codes": []}, pop)
    assert r.warning is None and r.body["demographics"] == {"age": LEARNED, "sex": LEARNED}
    assert CohortSpec.from_dict(r.body).age.to_dict() == {"distribution": "histogram", "bins": list(pop.age_bins),
                                                          "weights": [float(w) for w in pop.age_weights]}
    given = fill_demographics({"sex": {"female": 0.9}}, pop).body
    assert given["demographics"] == {"age": LEARNED, "sex": "given"} and given["sex"] == {"female": 0.9}
    again = fill_demographics(given, pop).body  # a resolved spec keeps its record (the worker's second shard)
    assert again == given
    old = fill_demographics({}, None)
    assert old.body["demographics"] == {"age": OLD_DEFAULT, "sex": OLD_DEFAULT} and "population.json" in old.warning
    assert CohortSpec.from_dict(old.body).female == 0.5


def test_age_pmf_matches_the_draws():
    rng = np.random.default_rng(0)
    for age in ({"distribution": "histogram", "bins": [0, 10, 70, 91], "weights": [1, 0, 3]},
                {"distribution": "normal", "mean": 60, "sd": 20, "min": 0, "max": 90},
                {"distribution": "fixed", "value": 72.5}):
        spec = CohortSpec.from_dict({"age": age})
        draws = np.array([spec.age.draw(rng) for _ in range(20000)])
        pmf = age_pmf(age)
        assert abs(draws.mean() - (pmf * np.arange(91)).sum()) < 0.5, age


def test_post_cohorts_accepts_a_body_without_age_or_sex(client, auth, body, runner):
    """The API leaves age and sex absent in the stored spec; the generating worker resolves them."""
    r = client.post("/cohorts", json={k: v for k, v in body.items() if k not in ("age", "sex")}, headers=auth)
    assert r.status_code == 202, r.text
    assert "age" not in r.json()["spec"] and "sex" not in r.json()["spec"]
    assert {name for name, _ in runner} == {"promptehr.generate"}


@pytest.fixture
def body(session) -> dict:
    from tests.support.service import make_model

    return {"model_id": make_model(session), "n_patients": 25, "seed": 7, "required_codes": ["4019"]}


@pytest.mark.slow
def test_the_worker_generates_the_learned_population_and_records_it(desynpuf_model, sqlite_migrated_url, shared_data,
                                                                    tmp_path, runner):
    """A stored spec without age/sex: each shard resolves them from the checkpoint and writes the resolved spec,
    with where it came from, to the cohort; the report compares the cohort with it and shows the model card."""
    from promptehr.model.nn.checkpoint import MANIFEST, sha256_of
    from promptehr.service import store
    from promptehr.service.settings import Settings
    from promptehr.worker.context import make_context
    from promptehr.worker.dispatch import EVALUATE, GENERATE, run_task

    ctx = make_context(Settings(database_url=sqlite_migrated_url, promptehr_home=tmp_path, data_root=shared_data,
                                model_root=tmp_path / "models"), device="cpu")
    try:
        with ctx.session() as s:
            ds = store.create_dataset(s, name="ds1", format="desynpuf", path="desynpuf-sample/1-sample-10000", stats={})
            model = store.create_model(s, name="m", dataset_id=ds.id, checkpoint_path=str(desynpuf_model),
                                       manifest_sha256=sha256_of(desynpuf_model / MANIFEST), config={"split_seed": 0})
            spec = {"required_codes": [], "sampling": {"temperature": 1.0, "top_p": 0.95, "top_k": 0}}
            cohort, shards = store.create_cohort(s, model_id=model.id, n_patients=1000, seed=3, spec=spec, shard_size=500)
        for shard in shards:
            assert run_task(GENERATE, shard.id, ctx) == "succeeded"
        population = read_population(desynpuf_model)
        with ctx.session() as s:
            row = store.get_cohort(s, cohort.id)
            stored = row.spec
            ages = [p.patient["age"] for rows in store.iter_patients(s, cohort.id) for p in rows]
        assert stored["demographics"] == {"age": LEARNED, "sex": LEARNED}
        assert stored["age"] == population.age_spec() and stored["sex"] == {"female": population.female}
        assert len(ages) == 1000 and abs(np.mean(ages) - population.age_mean) < 2.0
        evaluations = [job_id for name, job_id in runner if name == EVALUATE]
        assert len(evaluations) == 1
        assert run_task(EVALUATE, evaluations[0], ctx) == "succeeded"
        with ctx.session() as s:
            report = store.get_report(s, evaluations[0])
            content, html = report.content, report.html
        assert content["population"]["requested"]["source"] == LEARNED
        assert content["demographics"]["age_mean_gap"]["pass"] is True
        assert content["model_card"]["preset"] == "tiny" and "Model card" in html and "Demographics" in html
    finally:
        ctx.close()


def visits_per_patient(path: Path) -> float:
    return float(np.mean([len(json.loads(line)["visits"]) for line in path.read_text().splitlines()]))


def test_the_stop_bias_search_solves_the_geometric_record_and_moves_towards_a_bent_one():
    """Where the end of a record has one stop probability after every visit (visits - 1 = odds^-1, scaled by
    e^-bias) the closed form is exact and any secant step lands on it; where the response bends (here
    log(visits - 1) quadratic in the bias) each secant step through the last two rounds gets closer."""
    train = 1.766

    def geometric(b):
        return 1 + 0.48 * np.exp(-b)

    exact = float(np.log(0.48 / (train - 1)))
    assert calibrated_stop_bias(train, geometric(0.0)) == pytest.approx(exact, abs=1e-4)
    for b0, b1 in ((0.0, -0.1), (-0.2, -0.9), (0.3, 1.0)):
        assert stop_bias_secant(train, b0, geometric(b0), b1, geometric(b1)) == pytest.approx(exact, abs=1e-3)

    def bent(b):
        return 1 + 0.48 * np.exp(-b + 0.4 * b * b)

    target = np.log(train - 1)
    gap = [abs(np.log(bent(b) - 1) - target) for b in (0.0,)]
    rounds = [(0.0, bent(0.0))]
    b = calibrated_stop_bias(train, rounds[0][1])
    for _ in range(3):
        rounds.append((b, bent(b)))
        gap.append(abs(np.log(bent(b) - 1) - target))
        (b0, v0), (b1, v1) = rounds[-2:]
        b = stop_bias_secant(train, b0, v0, b1, v1)
    assert gap[1] > gap[2] > gap[3] and gap[3] < 0.01 * gap[1], gap
    # nothing to calibrate: one visit per patient, or the same point twice
    assert calibrated_stop_bias(train, 1.0) == 0.0
    assert stop_bias_secant(train, -0.5, 1.8, -0.5, 1.8) == -0.5


def test_calibration_cohorts_grow_with_the_training_split_within_their_bounds():
    lo, hi = CALIBRATION_PATIENTS
    assert calibration_patients(50) == lo and calibration_patients(1_000) == 2_000 and calibration_patients(15_000) == hi


@pytest.mark.slow
def test_the_default_cohort_has_the_training_visits_per_patient(desynpuf_model, shared_data, tmp_path):
    """The model under-produces visits (DE-SynPUF 1-6: 1.50 per patient for 1.75); training calibrates the
    end-of-record decision (population.json's stop_bias, card.json's stop_calibration), and a cohort that
    gives no stop_bias takes it: closer to the training split than the uncalibrated sampler (--stop-bias 0)."""
    from promptehr.model.data import load_patients

    population = read_population(desynpuf_model)
    full_card = json.loads((desynpuf_model / "card.json").read_text())
    card = full_card["stop_calibration"]
    assert card["stop_bias"] == population.stop_bias != 0.0
    assert card["patients"] == calibration_patients(full_card["data"]["splits"]["train"]["patients"]) == 4000
    train = card["train_visits_per_patient"]
    rounds = card["rounds"]  # the search: no bias, the closed form, then secant steps until one lands close
    assert rounds[0]["stop_bias"] == 0.0 and rounds[1]["stop_bias"] == card["closed_form_stop_bias"]
    assert 2 <= len(rounds) <= CALIBRATION_ROUNDS
    last = rounds[-1]
    if abs(last["visits_per_patient"] - train) <= CALIBRATION_TOLERANCE * train:
        assert card["stop_bias"] == last["stop_bias"]
    else:  # no round landed: the bias is one more secant step, unmeasured
        assert len(rounds) == CALIBRATION_ROUNDS and card["stop_bias"] != last["stop_bias"]
    assert abs(train - np.mean([len(p.visits) for p in load_patients(shared_data / "desynpuf-sample" / "1-sample-10000")])) < 0.05
    means = {}
    for name, extra in (("calibrated", []), ("uncalibrated", ["--stop-bias", "0"])):
        out = tmp_path / f"{name}.jsonl"
        r = promptehr("generate", "--model", str(desynpuf_model), "--n", "3000", "--seed", "2", "--threads", "1",
                      "--out", str(out), *extra)
        assert r.returncode == 0, r.stderr
        means[name] = visits_per_patient(out)
    assert abs(means["calibrated"] - train) < abs(means["uncalibrated"] - train), (means, train)
    assert abs(means["calibrated"] - train) / train < 0.06, (means, train)
