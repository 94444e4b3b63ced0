"""Helpers the tests import (no fixtures and no tests here; the fixtures are in tests/conftest.py):

- databases.py: throwaway migrated PostgreSQL databases.
- service.py: assertions and rows for the in-process API and store tests.
- worker.py: the API, `promptehr serve` and Celery workers in subprocesses, and an HTTP client.
- reliability.py: private PostgreSQL and Redis servers that a test may stop and start.
"""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository root: the cwd of every subprocess a test starts


def pg_admin_url() -> str:
    """PROMPTEHR_TEST_POSTGRES: the URL that creates and drops the throwaway databases."""
    return os.environ.get("PROMPTEHR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
