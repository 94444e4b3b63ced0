"""405 answers whose `Allow` header lists every method the path answers.

Starlette answers 405 from the first route whose path matched, with that route's methods only; our
resources have one route per method (`GET /cohorts` and `POST /cohorts` are two), so `PUT /cohorts`
said `Allow: POST`. RFC 9110 section 15.5.6: Allow lists the target's methods, all of them.
"""
from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.routing import Match

from promptehr.service.problems import ProblemResponse, problem_response

# The methods asked about; HEAD is answered only where a route says so (FastAPI's routes do not).
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope) -> list[str]:
    """The methods some route of `app` answers on the path of `scope`."""
    return [method for method in METHODS
            if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)]


async def _on_method_not_allowed(request: Request, exc: HTTPException) -> ProblemResponse:
    allow = ", ".join(allowed_methods(request.app, request.scope))
    return problem_response(request, 405, f"{request.method} is not allowed on {request.url.path} (allowed: {allow})",
                            headers={"Allow": allow})


def install_allow_header(app: FastAPI) -> None:
    # A status-code handler: Starlette prefers it to the HTTPException handler of service/problems.py.
    app.add_exception_handler(405, _on_method_not_allowed)
