"""`pip install promptehr` without extras (issue 13): train, generate and evaluate run with none of the
service's packages importable, and the service's commands say which extra they need. The packages are
hidden from a fresh interpreter by a meta-path finder that refuses them, as an environment without
them would (a real fresh venv costs minutes of installing torch; the README's note gives that check)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from promptehr.cli.main import SERVICE_MODULES

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys
    HIDDEN = {sorted(SERVICE_MODULES)!r}

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    from promptehr.cli.main import main
    rc = main(sys.argv[1:])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN)
    assert not leaked, leaked
    sys.exit(rc)
""")


def promptehr_core(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_the_model_needs_no_service_package(shared_data, tmp_path):
    hidden = promptehr_core("-q", "serve")
    assert hidden.returncode == 2 and "pip install 'promptehr[service]'" in hidden.stderr, hidden.stderr
    model = tmp_path / "m"
    r = promptehr_core("train", "--data", str(shared_data / "mimic3-demo"), "--preset", "tiny", "--max-steps", "2",
                       "--device", "cpu", "--out", str(model))
    assert r.returncode == 0, r.stderr
    r = promptehr_core("generate", "--model", str(model), "--n", "30", "--out", str(tmp_path / "c.jsonl"))
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 30
    r = promptehr_core("evaluate", "--synthetic", str(tmp_path / "c.jsonl"), "--real", str(shared_data / "mimic3-demo"),
                       "--subsamples", "1", "--out", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert set(json.loads((tmp_path / "r.json").read_text())["passed"]) >= {"fidelity", "validity", "privacy"}
