"""Probes: /healthz (the process answers) and /readyz (database and, when configured, broker answer)."""
from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from service.jobs import broker_ping
from service.problems import problem_response
from service.schemas.common import problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict:
    return {"status": "ok"}


def _check_database(request: Request) -> str | None:
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any failure means not ready
        return type(e).__name__
    return None


def _check_broker(request: Request) -> str | None:
    try:
        broker_ping(request.app.state.settings)
    except Exception as e:  # noqa: BLE001
        return type(e).__name__
    return None


@router.get("/readyz", summary="Database and broker reachable", responses=problem_responses(503))
async def readyz(request: Request):
    checks = {"database": "ok"}
    failed = []
    db_error = await run_in_threadpool(_check_database, request)
    if db_error:
        checks["database"] = f"unreachable ({db_error})"
        failed.append("database")
    if request.app.state.settings.celery_broker_url:
        broker_error = await run_in_threadpool(_check_broker, request)
        checks["broker"] = f"unreachable ({broker_error})" if broker_error else "ok"
        if broker_error:
            failed.append("broker")
    else:
        checks["broker"] = "in-process"
    if failed:
        return problem_response(
            request, 503, f"Not ready: {', '.join(failed)} unreachable.", type="not-ready", checks=checks
        )
    return {"status": "ready", "checks": checks}
