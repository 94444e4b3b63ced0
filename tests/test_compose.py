"""There is no Docker engine here, so the compose file and images are checked for structure:
the services and their wiring, and that every command an image runs exists in the project."""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

from cli.main import COMMANDS, build_parser

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
    from service.settings import Settings

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
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for part in src.split():
            assert (REPO / part).exists(), f"{dockerfile} copies missing {part}"
    assert "torch==2.13.0" in text or "pytorch/pytorch:2.13.0" in text


def _promptehr_invocations(script: Path) -> list[list[str]]:
    calls = []
    for line in script.read_text().splitlines():
        line = line.strip()
        if line.startswith("exec "):
            line = line[5:]
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
