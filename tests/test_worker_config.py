"""The Celery app's delivery settings (see worker/celery_app.py for why each is what it is), that
importing it connects to nothing, and the `promptehr worker` command."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_worker_support import REPO, app_env


@pytest.fixture
def config(monkeypatch):
    from service.settings import get_settings
    from worker.celery_app import celery_config

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
    from service.settings import Settings
    from worker.celery_app import visibility_timeout

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


def test_worker_command_needs_a_broker(tmp_path):
    env = app_env(home=tmp_path, data_root=tmp_path)
    out = subprocess.run([sys.executable, "-m", "cli", "worker"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 2 and "CELERY_BROKER_URL" in out.stderr


def test_worker_command_arguments():
    from cli.main import build_parser
    from cli.worker import build_argv

    args = build_parser().parse_args(["worker", "--queue", "gpu", "--concurrency", "1"])
    assert build_argv(args, "gpu")[:8] == ["worker", "--queues", "gpu", "--concurrency", "1", "--loglevel", "info",
                                           "--pool"]
    assert "prefork" in build_argv(args, "gpu")
