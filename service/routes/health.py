"""Probes: /healthz (the process answers) and /readyz (database and, when configured, broker answer).

/readyz tells a busy database pool from an outage: "busy" when every pooled connection of this
process is in use but the database answers a connection of its own; "unreachable (...)" when it does
not. Both are 503 (a load balancer should send requests elsewhere either way); busy comes with
Retry-After, since it passes as soon as requests finish.
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from promptehr.service.db import make_engine, pool_is_full
from promptehr.service.jobs import broker_ping
from promptehr.service.problems import problem_response
from promptehr.service.schemas.common import problem_responses

router = APIRouter(tags=["health"])

PROBE_CONNECT_TIMEOUT = 5  # seconds: a probe must answer well within a load balancer's timeout


@router.get("/healthz", summary="The process is up")
def healthz() -> dict:
    return {"status": "ok"}


def _select_one(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def _probe_engine(request: Request) -> sa.Engine:
    """An engine with no pool on the app's database (made once): whether the database answers when
    the app's pool has no connection to spare."""
    state = request.app.state
    if getattr(state, "probe_engine", None) is None:
        url = state.settings.database_url
        connect_args = {"connect_timeout": PROBE_CONNECT_TIMEOUT} if make_url(url).get_backend_name() == "postgresql" \
            else {}
        state.probe_engine = make_engine(url, poolclass=NullPool, connect_args=connect_args)
    return state.probe_engine


def _unreachable(e: Exception) -> str:
    return f"unreachable ({type(e).__name__})"


def _check_database(request: Request) -> str:
    """"ok", "busy (...)" or "unreachable (<error>)"."""
    engine, settings = request.app.state.engine, request.app.state.settings
    if not pool_is_full(engine, settings):
        try:
            _select_one(engine)
            return "ok"
        except sa_exc.TimeoutError:
            pass  # the pool filled up meanwhile: ask the database directly, below
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            return _unreachable(e)
    try:
        _select_one(_probe_engine(request))
    except Exception as e:  # noqa: BLE001
        return _unreachable(e)
    in_use = settings.database_pool_size + settings.database_max_overflow
    return f"busy (all {in_use} pooled connections in use)"


def _check_broker(request: Request) -> str | None:
    try:
        broker_ping(request.app.state.settings)
    except Exception as e:  # noqa: BLE001
        return type(e).__name__
    return None


@router.get("/readyz", summary="Database and broker reachable", responses=problem_responses(503))
async def readyz(request: Request):
    checks = {"database": await run_in_threadpool(_check_database, request)}
    failed = [] if checks["database"] == "ok" else [f"database {checks['database'].split(' ', 1)[0]}"]
    if request.app.state.settings.celery_broker_url:
        broker_error = await run_in_threadpool(_check_broker, request)
        checks["broker"] = f"unreachable ({broker_error})" if broker_error else "ok"
        if broker_error:
            failed.append("broker unreachable")
    else:
        checks["broker"] = "in-process"
    if failed:
        busy = checks["database"].startswith("busy")
        return problem_response(request, 503, f"Not ready: {', '.join(failed)}.", type="not-ready", checks=checks,
                                headers={"Retry-After": "2"} if busy else None)
    return {"status": "ready", "checks": checks}
