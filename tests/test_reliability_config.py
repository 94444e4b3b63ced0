"""Settings the reliability tests rely on are really read from the environment."""
from __future__ import annotations

from promptehr.service.settings import Settings


def test_visibility_timeout_is_configurable_through_the_environment(monkeypatch, tmp_path):
    """A worker's Redis visibility timeout comes from PROMPTEHR_CELERY_VISIBILITY_TIMEOUT_SECONDS (the
    worker reads settings.celery_visibility_timeout_seconds); unset, it is the long default."""
    from promptehr.worker.celery_app import DEFAULT_VISIBILITY_TIMEOUT, visibility_timeout

    monkeypatch.setenv("PROMPTEHR_HOME", str(tmp_path))
    monkeypatch.setenv("PROMPTEHR_CELERY_VISIBILITY_TIMEOUT_SECONDS", "7")
    assert visibility_timeout(Settings()) == 7
    monkeypatch.delenv("PROMPTEHR_CELERY_VISIBILITY_TIMEOUT_SECONDS")
    assert visibility_timeout(Settings()) == DEFAULT_VISIBILITY_TIMEOUT


def test_generation_batch_size_is_configurable_through_the_environment(monkeypatch, tmp_path):
    """worker.generate_task stores a shard PROMPTEHR_GENERATION_BATCH_SIZE patients at a time (it reads
    settings.generation_batch_size); smaller batches mean less work lost when a worker dies mid-shard."""
    monkeypatch.setenv("PROMPTEHR_HOME", str(tmp_path))
    monkeypatch.setenv("PROMPTEHR_GENERATION_BATCH_SIZE", "5")
    assert Settings().generation_batch_size == 5
    monkeypatch.delenv("PROMPTEHR_GENERATION_BATCH_SIZE")
    assert Settings().generation_batch_size is None
