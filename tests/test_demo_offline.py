"""`promptehr demo` on the DE-SynPUF extract shipped in the package: no network, a training time budget."""
from __future__ import annotations

import gzip
import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

from promptehr.model.data import load_patients
from promptehr.model.data.demo_data import DESYNPUF_NOTICE, SAMPLE_PATIENTS, shipped_sample
from tests.test_demo_cli import PROMPTEHR, _check_outputs

REPO = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens on port 9: every connection is refused at once


def _build_script():
    spec = importlib.util.spec_from_file_location("build_demo_sample", REPO / "scripts" / "build_demo_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _offline(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """The demo with every proxy pointing at a closed port and an empty cache folder."""
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "promptehr_demo_data_url")}
    env.update({"OMP_NUM_THREADS": "1", "PROMPTEHR_CACHE": str(cache),
                **{k: UNREACHABLE for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")}})
    return subprocess.run([PROMPTEHR, "demo", *args], check=False, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)


def test_shipped_sample_is_what_the_script_builds(shared_data):
    blob, n = _build_script().build_bytes(shared_data)
    assert n == SAMPLE_PATIENTS
    assert shipped_sample().read_bytes() == blob, "rerun scripts/build_demo_sample.py: the shipped sample has drifted"
    assert gzip.decompress(blob).startswith(b"patient_id,visit_id,visit_time,visit_end,code,code_system,age,sex\n")


def test_shipped_sample_loads_to_the_patients_of_desynpuf_sample_1(shared_data):
    path = shipped_sample()
    assert path.parent.name == "resources" and path.stat().st_size < 1_000_000
    shipped = load_patients(path)
    assert len(shipped) == SAMPLE_PATIENTS == 3268
    assert shipped == load_patients(shared_data / "desynpuf-sample" / "1-sample-10000")
    notice = (path.parent / "DESYNPUF_NOTICE.txt").read_text()
    assert "no copyright" in notice and "identify" in notice and "4a889b0649d482d23f3ddd9133e9905c4eb31383" in notice


@pytest.mark.slow  # trains twice
def test_time_budget_stops_at_an_epoch_end(shared_data, tmp_path):
    from promptehr.model.nn.config import train_config
    from promptehr.model.split import split_patients
    from promptehr.model.training.train import train

    train_set, val_set, _ = split_patients(load_patients(shared_data / "mimic3-demo"), 0)
    cfg = train_config("tiny", epochs=3)
    r = train(train_set, val_set, cfg, tmp_path / "m", device="cpu", time_budget=0.001)
    # the budget runs out during the first epoch: it ends after one step, validated and saved
    assert (r.status, r.epochs_run, r.steps, r.best_epoch) == ("time_budget", 1, 1, 1)
    assert (tmp_path / "m" / "model.safetensors").is_file() and not (tmp_path / "m.resume").exists()
    r = train(train_set, val_set, cfg, tmp_path / "m2", device="cpu", time_budget=600)
    assert r.epochs_run == 3 and r.status != "time_budget"


@pytest.mark.slow  # trains, generates and evaluates
def test_demo_trains_on_the_shipped_sample_with_no_network(tmp_path):
    out = tmp_path / "demo"
    proc = _offline(["--preset", "tiny", "--epochs", "3", "--threads", "1", "--minutes", "0.01", "--n", "30", "--out", str(out)],
                    tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert DESYNPUF_NOTICE in lines, "the data's notice is printed"
    report = _check_outputs(out, "\n".join(line for line in lines if line != DESYNPUF_NOTICE), 30)
    assert report["generator"]["data"] == [str(shipped_sample())] and report["generator"]["minutes"] == 0.01
    assert report["generator"]["epochs_run"] == 1, "the budget stops training in the first epoch"
    steps = re.search(r"^time_budget: 1 epochs, (\d+) steps", proc.stderr, re.M)
    full_epoch = report["data"]["train"]["patients"] / 16  # the tiny preset's batch size
    assert steps and 1 <= int(steps[1]) < full_epoch, "the 0.6 s budget ends the first epoch early"
    assert report["data"]["train"]["patients"] + report["data"]["holdout"]["patients"] < SAMPLE_PATIENTS
    assert list((tmp_path / "cache").iterdir()) == [], "nothing is downloaded or cached"


def test_mimic3_demo_unreachable_is_one_line_and_exit_2(tmp_path):
    proc = _offline(["--data", "mimic3-demo", "--out", str(tmp_path / "demo")], tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("promptehr demo: error: could not download the MIMIC-III demo from https://physionet.org/")
    assert "offline" in lines[0] and "--data" in lines[0]
    assert not (tmp_path / "demo").exists(), "nothing is written before the data is there"


@pytest.mark.parametrize("minutes", ["0", "-1", "nan"])
def test_minutes_must_be_above_0(tmp_path, minutes):
    proc = _offline(["--minutes", minutes, "--out", str(tmp_path / "demo")], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptehr demo: error: --minutes must be"), proc.stderr
    assert not (tmp_path / "demo").exists()
