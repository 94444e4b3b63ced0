"""The CUDA tests (run by bench/gpu.sh on a machine with a GPU; outside the suite's testpaths, so CPU CI
never collects them). Without CUDA they fail rather than skip: running them there is a mistake."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cuda() -> torch.device:
    assert torch.cuda.is_available(), "bench/cuda_tests need CUDA (bench/gpu.sh runs them only when it is there)"
    return torch.device("cuda")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = Path(os.environ.get("PROMPTEHR_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
    assert (root / "mimic3-demo").is_dir(), f"shared data not found at {root}; set PROMPTEHR_SHARED_DATA"
    return root
