"""The report warns when the cohort (or the model's training data) and the real data look like different sources."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from promptehr.model.data import load_patients
from promptehr.model.evaluation import sources
from promptehr.model.split import split_patients

PROMPTEHR = str(Path(sys.executable).parent / "promptehr")


def _split(patients):
    train, _, holdout = split_patients(patients, 0)
    return train, holdout


@pytest.fixture(scope="module")
def data(shared_data):
    d = shared_data
    return {"mimic3": load_patients(d / "mimic3-demo"), "mimic4": load_patients(d / "mimic4-demo"),
            "desynpuf1": load_patients(d / "desynpuf-sample" / "1-sample-10000"),
            "desynpuf2": load_patients(d / "desynpuf-sample" / "2-sample-10000")}


def _kinds(cohort, real, **kw) -> list[str]:
    return [w.kind for w in sources.source_warnings(cohort, *_split(real), **kw)]


def test_mimic3_patients_against_desynpuf_are_warned_of(data):
    assert _kinds(data["mimic3"], data["desynpuf1"]) == ["code_overlap"]


def test_icd10_records_against_icd9_data_are_warned_of(data):
    assert _kinds(data["mimic4"], data["mimic3"]) == ["code_systems", "unseen_codes", "code_overlap"]


def test_another_desynpuf_sample_is_the_same_source(data):
    cohort = [p for p in data["desynpuf2"] if p.visits][:300]
    assert _kinds(cohort, data["desynpuf1"]) == []
    train, holdout = _split(data["desynpuf1"])
    assert sources.source_warnings(holdout, train, holdout) == []


def test_model_counts_are_compared_too(data):
    counts = sources.code_counts(data["desynpuf1"])
    cohort = _split(data["mimic3"])[1]
    kinds = [(w.kind, w.about) for w in sources.source_warnings(cohort, *_split(data["mimic3"]), model_counts=counts)]
    assert kinds == [("unseen_codes", "the model's training data")]


def test_overlap_is_one_minus_total_variation():
    assert sources.overlap({"a": 1, "b": 1}, {"a": 3, "c": 1}) == pytest.approx(0.5)
    assert sources.overlap({"a": 2}, {"a": 5}) == 1.0 and sources.overlap({}, {"a": 1}) == 0.0


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([PROMPTEHR, "-q", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
                          env={"OMP_NUM_THREADS": "1", "PATH": str(Path(sys.executable).parent)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow  # trains a tiny model
def test_a_mimic3_model_cohort_is_warned_against_desynpuf_not_against_mimic3(shared_data, tmp_path):
    _run("train", "--data", str(shared_data / "mimic3-demo"), "--preset", "tiny", "--epochs", "2", "--device", "cpu",
         "--out", "model", cwd=tmp_path)
    _run("generate", "--model", "model", "--n", "300", "--seed", "1", "--age-mean", "65", "--age-sd", "15",
         "--out", "cohort.jsonl", cwd=tmp_path)
    reports = {}
    for name, real in (("desynpuf", shared_data / "desynpuf-sample" / "1-sample-10000"), ("mimic3", shared_data / "mimic3-demo")):
        proc = _run("evaluate", "--synthetic", "cohort.jsonl", "--real", str(real), "--model", "model",
                    "--out", f"{name}.json", "--html", f"{name}.html", cwd=tmp_path)
        report = json.loads((tmp_path / f"{name}.json").read_text())
        reports[name] = report
        messages = [w["message"] for w in report["warnings"]]
        assert json.loads(proc.stdout.splitlines()[-1])["warnings"] == messages
        assert all(f"warning: {m}" in proc.stderr for m in messages)
        page = (tmp_path / f"{name}.html").read_text()
        assert page.count('<p class="warning">Warning: ') == len(messages)
        if messages:
            assert page.index("Warning: ") < page.index("<h2>Data"), "warnings are at the top"
    assert [(w["kind"], w["about"]) for w in reports["desynpuf"]["warnings"]] == [
        ("code_overlap", "the cohort"), ("code_overlap", "the model's training data")]
    assert reports["mimic3"]["warnings"] == []
