"""One import namespace, `promptehr`: the wheel holds `promptehr` alone (no generic top-level `model`,
`service`, `worker`, `cli`, `migrations`), pyproject.toml lists every package folder, and a user's own
model.py, service.py, worker.py or cli.py in the working directory shadows nothing: the docs/python.md
example and the command run from such a folder."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO

ROOTS = ("model", "service", "worker", "cli", "migrations", "promptehr")
USER_FILES = ("model.py", "service.py", "worker.py", "cli.py")
# Not part of a wheel's source: the environment, history, caches and earlier builds.
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "__pycache__", "build", "dist", "*.egg-info", ".pytest_cache",
                                    ".ruff_cache", ".hypothesis", "node_modules")


def setuptools_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_in_the_wheel_list():
    config = setuptools_config()
    folder_of = {name: folder for name, folder in config["package-dir"].items()}
    assert {folder_of[n] for n in folder_of} == set(ROOTS), "package-dir maps each top folder under promptehr"
    package_of = {folder: name for name, folder in folder_of.items()}
    found = set()
    for root in ROOTS:
        for init in (REPO / root).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / root).parts
            if "__pycache__" not in parts:
                found.add(".".join((package_of[root], *parts)))
    assert "promptehr.model.data" in found and "promptehr.service.routes" in found
    missing, extra = found - set(config["packages"]), set(config["packages"]) - found
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {sorted(missing)}"
    assert not extra, f"pyproject.toml lists packages with no folder: {sorted(extra)}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel, built from a copy of the tree (the build writes build/ and *.egg-info beside the source)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
                    str(src)], check=True, capture_output=True, timeout=300)
    (path,) = (tmp / "dist").glob("promptehr-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


@pytest.mark.slow
def test_the_wheel_installs_promptehr_alone(wheel):
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"promptehr"}, sorted(tops)
    assert len([t for t in tops if t.endswith(".dist-info")]) == 1
    for generic in ("model", "service", "worker", "cli", "migrations"):
        assert f"promptehr/{generic}/__init__.py" in names


@pytest.mark.slow
def test_the_wheel_holds_the_data_files(wheel):
    names = set(wheel.namelist())
    resources = sorted(p.name for p in (REPO / "model" / "resources").iterdir() if p.is_file())
    versions = sorted(p.name for p in (REPO / "migrations" / "versions").glob("*.py"))
    assert resources and versions
    for name in resources:
        assert f"promptehr/model/resources/{name}" in names
    for name in versions:
        assert f"promptehr/migrations/versions/{name}" in names
    assert {"promptehr/migrations/alembic.ini", "promptehr/migrations/script.py.mako"} <= names
    assert "promptehr/__main__.py" in names and "promptehr/synthesizer.py" in names


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A working directory holding a user's own model.py, service.py, worker.py and cli.py."""
    for name in USER_FILES:
        (tmp_path / name).write_text(f"raise SystemExit('user file imported: {name}')\n")
    return tmp_path


def run(args: list[str], cwd: Path, timeout: int = 120, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", **env_vars}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(args, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert "user file imported" not in proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def docs_example() -> str:
    text = (REPO / "docs" / "python.md").read_text()
    match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/python.md has a ```python block"
    return match.group(1)


@pytest.mark.slow
def test_the_docs_example_runs_beside_the_users_files(user_folder, shared_data):
    (user_folder / "example.py").write_text(docs_example())  # a script's folder is sys.path[0]: the user's files
    proc = run([sys.executable, "example.py"], user_folder, timeout=300, PROMPTEHR_SHARED_DATA=str(shared_data))
    assert "fidelity" in proc.stdout  # the report's summary was printed
    assert (user_folder / "my-model" / "manifest.json").is_file()


@pytest.mark.parametrize("args", [["-m", "promptehr", "--version"], ["-m", "promptehr.cli", "--version"]])
def test_python_m_runs_beside_the_users_files(user_folder, args):
    proc = run([sys.executable, *args], user_folder)
    assert re.fullmatch(r"promptehr \S+\n", proc.stdout)


def test_the_command_runs_beside_the_users_files(user_folder):
    proc = run([str(Path(sys.executable).parent / "promptehr"), "--help"], user_folder)
    assert "generate" in proc.stdout and "train" in proc.stdout
    cli_help = run([sys.executable, "-m", "promptehr", "generate", "--help"], user_folder)
    assert "--model" in cli_help.stdout
