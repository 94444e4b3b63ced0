"""A short run of bench/bench_load.py (50 clients, 10 s, private PostgreSQL and Redis, the API under
uvicorn on loopback): every request answered as expected, nothing logged as an error by the API.
The 60-second figures are in docs/reliability.md."""
from __future__ import annotations

import importlib.util

import pytest

from tests.support.reliability import REPO

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(300)]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_load", REPO / "bench" / "bench_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fifty_clients_for_ten_seconds_get_no_errors():
    result = _bench_module().bench(clients=50, duration=10)
    print("\nload:", {k: result[k] for k in ("requests", "errors", "throughput_rps", "overall")})
    assert result["errors"] == 0, result["error_samples"]
    assert result["api_log_errors"] == 0
    assert result["requests"] > 50 and result["cohorts_created"] > 0
    assert all(op["requests"] > 0 for op in result["by_operation"].values())
