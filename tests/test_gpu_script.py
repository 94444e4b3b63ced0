"""bench/gpu.sh as far as a CPU allows: its fallback runs (tiny preset, few steps) and prints the one JSON
line with every figure the GPU run reports; the cuda-marked tests it runs on a GPU collect cleanly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# bench/gpu.sh --cpu trains, generates and runs the demo (~30 s); the collection check starts pytest (~10 s)
pytestmark = pytest.mark.slow


def test_cpu_fallback_prints_one_json_line_of_figures(shared_data):
    env = {**os.environ, "PROMPTEHR_SHARED_DATA": str(shared_data), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", "bench/gpu.sh", "--cpu"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1, run.stdout
    line = json.loads(lines[0])
    assert line["mode"] == "cpu" and line["matmul_peak_flop_per_s"] > 1e8
    tiny = line["tiny"]
    assert tiny["train_tokens_per_s"] > 0 and 0 < tiny["train_fraction_of_peak"] < 2
    gen = tiny["generate"]
    assert gen["patients"] == 64 and gen["patients_per_s"] > 0 and 0 < gen["fraction_of_peak"] < 2
    assert line["demo"]["seconds"] > 0


def test_cuda_tests_collect_outside_the_default_suite():
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "cuda", "bench/cuda_tests"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "3 tests collected" in run.stdout
    testpaths = (REPO / "pyproject.toml").read_text()
    assert 'testpaths = ["tests"]' in testpaths  # the CPU suite never collects bench/cuda_tests
