"""`promptehr demo` end to end: --data mimic3-demo (downloaded from a local server) or --data PATH, train, generate,
evaluate, report. The default, the shipped DE-SynPUF sample offline, is tests/test_demo_offline.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from promptehr.model.data.demo_data import NOTICE
from tests.support.demo import serve_under_files

PROMPTEHR = str(Path(sys.executable).parent / "promptehr")
FAST = ["--preset", "tiny", "--epochs", "1", "--threads", "1"]
SECTIONS = ("fidelity", "validity", "privacy", "utility")


def _run(args: list[str], tmp_path: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([PROMPTEHR, "demo", *args], check=False, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PROMPTEHR_CACHE": str(tmp_path / "cache"), **env})


def _check_outputs(out: Path, stdout: str, n: int) -> dict:
    """The folder holds model, cohort and report; stdout has one row per measure and ends with the HTML path."""
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "manifest.json").is_file()
    cohort = [json.loads(line) for line in (out / "cohort.jsonl").read_text().splitlines()]
    assert len(cohort) == n and all(p["visits"] for p in cohort)
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["synthetic"]["patients"] == n
    html = (out / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "fidelity" in html

    lines = stdout.splitlines()
    assert lines[-1] == f"report: {(out / 'report.html').resolve()}"
    assert lines[0] == "verdict: " + ("PASS (every section passes)" if report["verdict"]["passed"]
                                     else f"FAIL (failed: {', '.join(report['verdict']['failed_sections'])})")
    assert [w["message"] for w in report["warnings"]] == [line[len("warning: "):] for line in lines if line.startswith("warning: ")]
    header = next(line for line in lines if line.startswith("section "))
    assert header.split() == ["section", "measure", "synthetic", "threshold", "verdict", "real", "sample", "real", "sample", "verdict"]
    for section in SECTIONS:
        assert report[section], section
        for name, m in report[section].items():
            row = next((line.split() for line in lines if line.split()[:2] == [section, name]), None)
            assert row is not None, f"{section} {name} missing from the summary"
            assert row[4] == {None: "n/a", True: "pass", False: "FAIL"}[m["pass"]]
            assert row[6] == {None: "n/a", True: "pass", False: "FAIL"}[m.get("limit_pass")]
            if m["value"] is not None:
                assert float(row[2]) == float(f"{m['value']:.4g}")
    assert f"sections: {', '.join(f'{s} ' + ('pass' if ok else 'FAIL') for s, ok in report['passed'].items())}" in lines
    assert any(line.startswith("model: held-out perplexity ") for line in lines), "the model's scores are summarised"
    timeline = list(((report.get("timeline") or {}).get("measures") or {}).values())  # measured when the data has dates
    unjudgeable = sum(m.get("limit_pass") is False for m in [*(m for s in SECTIONS for m in report[s].values()), *timeline])
    assert any(line.startswith(f"{unjudgeable} measure(s) FAIL even for the real sample") for line in lines) \
        == (unjudgeable > 0)
    return report


@pytest.mark.slow  # trains, generates and evaluates
def test_demo_downloads_the_mimic3_demo_then_trains_generates_and_reports(demo_server, tmp_path):
    url, root, requests = demo_server
    serve_under_files(root)
    out = tmp_path / "demo"
    proc = _run([*FAST, "--n", "30", "--data", "mimic3-demo", "--out", str(out)], tmp_path, PROMPTEHR_DEMO_DATA_URL=url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(r.rsplit("/", 1)[-1] for r in requests) == ["ADMISSIONS.csv", "DIAGNOSES_ICD.csv", "LICENSE.txt", "PATIENTS.csv"]
    report = _check_outputs(out, proc.stdout, 30)
    cache = tmp_path / "cache" / "mimiciii-demo-1.4"
    assert report["generator"]["data"] == [str(cache)] and (cache / "DIAGNOSES_ICD.csv").is_file()
    assert report["data"]["train"]["patients"] + report["data"]["holdout"]["patients"] <= 100
    assert NOTICE in proc.stdout.splitlines(), "the ODbL notice comes with the demo data"


@pytest.mark.slow  # trains, generates and evaluates
def test_demo_with_local_data_needs_no_network(shared_data, tmp_path):
    out = tmp_path / "demo"
    # A closed port: any attempt to download would fail the run.
    proc = _run([*FAST, "--n", "20", "--seed", "3", "--data", str(shared_data / "mimic3-demo"), "--out", str(out)],
                tmp_path, PROMPTEHR_DEMO_DATA_URL="http://127.0.0.1:9/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _check_outputs(out, proc.stdout, 20)
    assert report["generator"]["data"] == [str(shared_data / "mimic3-demo")]
    assert report["seeds"]["cohort"] == 3 and report["generator"]["preset"] == "tiny"
    # the cohort mirrors the training split's sex mix (MIMIC-III demo: mostly women over 70)
    assert 0.4 < report["generator"]["spec"]["sex"]["female"] < 0.75
    assert not (tmp_path / "cache").exists()
    assert NOTICE not in proc.stdout


def test_demo_offline_says_so_in_one_line_and_exits_2(tmp_path):
    proc = _run(["--data", "mimic3-demo", "--out", str(tmp_path / "demo")], tmp_path, PROMPTEHR_DEMO_DATA_URL="http://127.0.0.1:9/")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("promptehr demo: error: ") and "--data" in lines[0] and "offline" in lines[0]
    assert not (tmp_path / "demo").exists(), "nothing is written before the data is there"


def test_demo_bad_data_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not patient records\n")
    proc = _run([*FAST, "--data", str(bad), "--out", str(tmp_path / "demo")], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptehr demo: error: "), proc.stderr
