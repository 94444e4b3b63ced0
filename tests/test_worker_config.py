"""The Celery app's delivery settings (see worker/celery_app.py for why each is what it is), that
importing it connects to nothing, which task module runs each job kind, and the `promptehr worker`
command."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO
from tests.support.worker import app_env


@pytest.fixture
def config(monkeypatch):
    from promptehr.service.settings import get_settings
    from promptehr.worker.celery_app import celery_config

    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/9")
    monkeypatch.delenv("PROMPTEHR_CELERY_VISIBILITY_TIMEOUT_SECONDS", raising=False)
    get_settings.cache_clear()
    try:
        yield celery_config()
    finally:
        get_settings.cache_clear()


def test_delivery_settings(config):
    assert config["broker_url"] == "redis://127.0.0.1:6379/9"
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1 and config["worker_concurrency"] == 1
    assert config["worker_pool"] == "prefork" and config["worker_max_tasks_per_child"] == 1
    assert config["task_default_queue"] == "gpu" and config["task_routes"] == {"promptehr.*": {"queue": "gpu"}}
    assert config["accept_content"] == ["json"]
    assert config["task_serializer"] == config["result_serializer"] == config["event_serializer"] == "json"
    # Longer than any job: a week unless configured.
    assert config["broker_transport_options"]["visibility_timeout"] >= 24 * 3600


def test_visibility_timeout_is_configurable(monkeypatch):
    from promptehr.service.settings import Settings
    from promptehr.worker.celery_app import visibility_timeout

    monkeypatch.setenv("PROMPTEHR_CELERY_VISIBILITY_TIMEOUT_SECONDS", "86400")
    assert visibility_timeout(Settings()) == 86400


def test_importing_the_app_connects_to_nothing_and_registers_the_three_tasks(tmp_path):
    # No broker configured and nothing listening: importing and listing tasks must still work.
    code = ("import sys, worker.celery_app as m; m.app.loader.import_default_modules(); "
            "print(sorted(t for t in m.app.tasks if t.startswith('promptehr.'))); "
            "print('torch' in sys.modules)")
    env = app_env(home=tmp_path, data_root=tmp_path, broker_url="redis://127.0.0.1:1/0")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.splitlines() == ["['promptehr.evaluate', 'promptehr.generate', 'promptehr.train']", "False"]


def test_every_job_kind_has_a_task_and_unknown_tasks_are_dropped():
    import importlib

    from promptehr.service import store
    from promptehr.worker.dispatch import TASK_MODULES, run_task

    assert list(TASK_MODULES) == list(store.JOB_KINDS)
    for kind, module in TASK_MODULES.items():
        assert importlib.import_module(module).KIND == kind
    assert run_task("promptehr.bake", "some-id", ctx=None) == "skipped"  # logged and acked, never run


def test_worker_command_needs_a_broker(tmp_path):
    env = app_env(home=tmp_path, data_root=tmp_path)
    out = subprocess.run([sys.executable, "-m", "promptehr.cli", "worker"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 2 and "CELERY_BROKER_URL" in out.stderr


def test_worker_command_arguments():
    from promptehr.cli.main import build_parser
    from promptehr.cli.worker import build_argv

    args = build_parser().parse_args(["worker", "--queue", "gpu", "--concurrency", "1"])
    assert build_argv(args, "gpu")[:8] == ["worker", "--queues", "gpu", "--concurrency", "1", "--loglevel", "info",
                                           "--pool"]
    assert "prefork" in build_argv(args, "gpu")


# --- worker settings come from service.settings.Settings, validated -------------------------------

WORKER_DIR = REPO / "worker"


def _settings(monkeypatch, tmp_path, **env: str):
    from promptehr.service.settings import Settings

    monkeypatch.setenv("PROMPTEHR_HOME", str(tmp_path))
    for name in ("PROMPTEHR_DEVICE", "PROMPTEHR_WORKER_MAX_TASKS_PER_CHILD", "PROMPTEHR_GENERATION_BATCH_SIZE",
                 "PROMPTEHR_CELERY_VISIBILITY_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_max_tasks_per_child_from_the_environment(monkeypatch, tmp_path):
    from promptehr.worker.celery_app import max_tasks_per_child

    assert max_tasks_per_child(_settings(monkeypatch, tmp_path)) == 1  # a fresh child per job
    assert max_tasks_per_child(_settings(monkeypatch, tmp_path, PROMPTEHR_WORKER_MAX_TASKS_PER_CHILD="3")) == 3
    assert max_tasks_per_child(_settings(monkeypatch, tmp_path, PROMPTEHR_WORKER_MAX_TASKS_PER_CHILD="0")) is None


def test_device_from_the_environment(monkeypatch, tmp_path):
    from promptehr.worker.context import pick_device

    for given, device in (("cpu", "cpu"), ("cuda:1", "cuda:1"), (" CUDA ", "cuda"), ("mps", "mps")):
        settings = _settings(monkeypatch, tmp_path, PROMPTEHR_DEVICE=given)
        assert settings.device == device and pick_device(settings) == device
    for unset in ("", "auto"):
        assert _settings(monkeypatch, tmp_path, PROMPTEHR_DEVICE=unset).device is None
    assert _settings(monkeypatch, tmp_path).device is None


@pytest.mark.parametrize("name, value", [
    ("PROMPTEHR_WORKER_MAX_TASKS_PER_CHILD", "-1"),
    ("PROMPTEHR_WORKER_MAX_TASKS_PER_CHILD", "many"),
    ("PROMPTEHR_DEVICE", "gpu"),
    ("PROMPTEHR_DEVICE", "cuda:x"),
    ("PROMPTEHR_GENERATION_BATCH_SIZE", "0"),
    ("PROMPTEHR_CELERY_VISIBILITY_TIMEOUT_SECONDS", "0"),
    ("PROMPTEHR_CELERY_VISIBILITY_TIMEOUT_SECONDS", "a week"),
])
def test_bad_worker_settings_are_refused_naming_the_field(monkeypatch, tmp_path, name, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        _settings(monkeypatch, tmp_path, **{name: value})
    assert name.removeprefix("PROMPTEHR_").lower() in str(info.value)


def test_worker_reads_no_environment_variable_itself():
    """Every setting goes through Settings (validated, one place): worker/ has no os.environ/getenv."""
    offenders = [f"{p.name}:{i}" for p in sorted(WORKER_DIR.glob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "os.environ" in line or "getenv" in line]
    assert not offenders, offenders


def test_every_variable_the_worker_names_is_a_setting():
    """The PROMPTEHR_* names worker/ documents (code and README) are Settings fields."""
    import re

    from promptehr.service.settings import Settings

    named = {m for p in [*WORKER_DIR.glob("*.py"), WORKER_DIR / "README.md"]
             for m in re.findall(r"PROMPTEHR_([A-Z0-9_]+)", p.read_text())}
    fields = {n.upper() for n in Settings.model_fields} | {"HOME"}  # promptehr_home: PROMPTEHR_HOME
    assert {"DEVICE", "WORKER_MAX_TASKS_PER_CHILD", "GENERATION_BATCH_SIZE"} <= named
    assert named <= fields, named - fields


def test_settings_are_not_built_at_import(tmp_path):
    """An invalid worker setting fails when the worker starts using settings, not on import."""
    code = ("import worker.celery_app as m, worker.tasks, worker.context, worker.generate_task; "
            "from service.settings import get_settings; print(get_settings.cache_info().currsize)")
    env = app_env(home=tmp_path, data_root=tmp_path, broker_url="redis://127.0.0.1:1/0", PROMPTEHR_DEVICE="gpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == ["0"]
