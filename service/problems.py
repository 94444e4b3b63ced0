"""RFC 9457 problem details (application/problem+json) for every error the API returns."""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc as sa_exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://promptehr.dev/problems/"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ):
        super().__init__(detail or title or str(status))
        self.status = status
        self.detail = detail
        self.title = title
        self.type = type
        self.headers = headers
        self.extensions = extensions


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    request: Request | None,
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + type if type else "about:blank",
        "title": title or _title(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
    body.update(extensions)
    return ProblemResponse(body, status_code=status, headers=headers)


def field_error(loc: tuple | list, message: str, type: str = "value_error") -> dict[str, Any]:
    """One entry of a validation problem's "errors" list."""
    loc = [str(p) for p in loc]
    return {"field": ".".join(loc), "loc": loc, "message": message, "type": type}


def validation_problem(errors: list[dict[str, Any]], detail: str | None = None) -> Problem:
    fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
    return Problem(
        422,
        detail or f"Invalid request: {fields}",
        title="Request validation failed",
        type="validation-error",
        errors=errors,
    )


async def _on_problem(request: Request, exc: Problem) -> ProblemResponse:
    return problem_response(
        request, exc.status, exc.detail, title=exc.title, type=exc.type, headers=exc.headers, **exc.extensions
    )


async def _on_http_exception(request: Request, exc: StarletteHTTPException) -> ProblemResponse:
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != _title(exc.status_code) else None
    if exc.status_code == 404 and detail is None:
        detail = f"No resource at {request.url.path}"
    if exc.status_code == 405 and detail is None:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(request, exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _on_validation_error(request: Request, exc: RequestValidationError) -> ProblemResponse:
    errors = [field_error(e.get("loc", ()), e.get("msg", "invalid"), e.get("type", "value_error")) for e in exc.errors()]
    return await _on_problem(request, validation_problem(errors))


async def _on_database_unavailable(request: Request, exc: Exception) -> ProblemResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return problem_response(
        request,
        503,
        "The database is not reachable; try again later.",
        type="database-unavailable",
        headers={"Retry-After": "5"},
    )


async def _on_database_busy(request: Request, exc: Exception) -> ProblemResponse:
    # sqlalchemy.exc.TimeoutError: every pooled connection stayed in use for pool_timeout
    # (settings.database_pool_timeout_seconds). The database is up and this process is overloaded:
    # a retry shortly after is likely to get a connection.
    log.warning("database pool exhausted: %s", str(exc).splitlines()[0][:200])
    return problem_response(
        request,
        503,
        "Every database connection of this server is in use; try again shortly.",
        type="database-busy",
        headers={"Retry-After": "2"},
    )


async def _on_unstorable_value(request: Request, exc: Exception) -> ProblemResponse:
    # The database refused a value of the request (PostgreSQL: text with a NUL character, a number
    # out of range): the client's error, and nothing was written (the transaction is rolled back).
    log.info("database refused a request value: %s", str(getattr(exc, "orig", exc)).splitlines()[0][:200])
    return problem_response(
        request,
        422,
        "A value in the request cannot be stored or looked up (for example text containing a NUL character).",
        title="Request validation failed",
        type="validation-error",
        errors=[],
    )


async def _on_conflicting_write(request: Request, exc: Exception) -> ProblemResponse:
    # A constraint refused the write: another request changed what this one refers to in between
    # (a model deleted while a cohort of it was being created: its foreign key). Nothing was written.
    log.info("write refused by a constraint: %s", str(getattr(exc, "orig", exc)).splitlines()[0][:200])
    return problem_response(request, 409, "A resource this request refers to was changed or deleted meanwhile; "
                            "nothing was written.", type="conflict")


async def _on_unexpected(request: Request, exc: Exception) -> ProblemResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(request, 500, "An unexpected error occurred.")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    # Connection failures (refused, dropped, timed out) are OperationalError/InterfaceError.
    app.add_exception_handler(sa_exc.OperationalError, _on_database_unavailable)
    app.add_exception_handler(sa_exc.InterfaceError, _on_database_unavailable)
    app.add_exception_handler(sa_exc.DisconnectionError, _on_database_unavailable)
    app.add_exception_handler(sa_exc.TimeoutError, _on_database_busy)  # the pool's, not a query's
    app.add_exception_handler(sa_exc.DataError, _on_unstorable_value)
    app.add_exception_handler(sa_exc.IntegrityError, _on_conflicting_write)
    app.add_exception_handler(Exception, _on_unexpected)
