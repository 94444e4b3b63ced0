"""The FastAPI application factory. Importing this module builds nothing and never imports torch.

    uvicorn --factory service.app:create_app      # what `promptehr serve` runs

At start-up (lifespan) the app refuses to start when the database is behind the latest migration
(run `promptehr db upgrade`); a database that cannot be reached at start-up is logged and reported by
/readyz, and requests that need it answer 503.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import sqlalchemy.exc as sa_exc
from fastapi import APIRouter, Depends, FastAPI
from fastapi_offline import FastAPIOffline

from promptehr.service import store
from promptehr.service.allow_header import install_allow_header
from promptehr.service.auth import require_api_key
from promptehr.service.body_limit import BodySizeLimitMiddleware
from promptehr.service.db import api_pool_options, make_engine, make_sessionmaker
from promptehr.service.migrate import check_schema_current
from promptehr.service.openapi_errors import document_errors
from promptehr.service.problems import install_problem_handlers
from promptehr.service.quotas import on_quota_exceeded
from promptehr.service.routes import cohorts, datasets, health, models, reports, training_jobs
from promptehr.service.settings import Settings, get_settings

log = logging.getLogger(__name__)

DESCRIPTION = """Synthetic electronic health records: register datasets, train PromptBart models,
generate cohorts and read their evaluation reports. All routes but /healthz and /readyz need an
`X-API-Key` header. Errors are RFC 9457 `application/problem+json`. POSTs accept an
`Idempotency-Key` header."""


def _check_schema(app: FastAPI) -> None:
    try:
        check_schema_current(app.state.engine)
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
        log.warning("database unreachable at start-up (%s); /readyz reports it", type(e).__name__)


@asynccontextmanager
async def lifespan(app: FastAPI):
    _check_schema(app)
    yield
    app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Swagger UI at /docs and ReDoc at /redoc from fastapi-offline's bundled copies of their scripts and
    # styles (served under /static-offline-docs), not a CDN: /docs was a blank page without a network.
    app = FastAPIOffline(
        title="PromptEHR",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
        # No redirect from /cohorts/ to /cohorts: Starlette builds its Location from the Host header,
        # which the client chooses (issue 15); such a path is a 404 problem instead.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings.database_url, **api_pool_options(settings))
    app.state.sessionmaker = make_sessionmaker(app.state.engine)
    app.state.export_gate = asyncio.Semaphore(settings.export_concurrency)  # see service/export.py

    install_problem_handlers(app)
    install_allow_header(app)
    app.add_exception_handler(store.QuotaExceeded, on_quota_exceeded)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)

    app.include_router(health.router)
    protected = APIRouter(dependencies=[Depends(require_api_key)])
    for module in (datasets, training_jobs, models, cohorts, reports):
        protected.include_router(module.router)
    app.include_router(protected)
    document_errors(app)
    return app
