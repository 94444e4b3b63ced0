"""The error answers every operation can give, added to the OpenAPI document where they occur.

What the routes' `responses=` cannot say, because it comes from below them:
- 400 on operations with a JSON body: FastAPI answers 400 problem+json when the body cannot be
  read as JSON text at all (not UTF-8, nested too deeply); malformed JSON syntax is a 422.
- 400 on every operation: the HTTP server (uvicorn) answers a malformed request (a control
  character in a header, a bad Content-Length or chunked encoding) before the app sees it, in
  text/plain (tests/test_reliability_fuzz.py sends such requests to the live server).
- 503 on every operation that needs the database (all with an API key): the key is looked up there,
  so an unreachable or exhausted database is a 503 problem with Retry-After.
- 422: FastAPI documents its own JSON shape; ours are problem documents.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from promptehr.service.schemas.common import ProblemDocument

PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDocument"}
PROBLEM = {"application/problem+json": {"schema": PROBLEM_REF}}
SERVER_400 = {"text/plain": {"schema": {"type": "string"}}}
BODY_400 = "The body cannot be read as JSON text (not UTF-8, nested too deeply): problem+json. "
HTTP_400 = ("A malformed HTTP request (bad header characters, Content-Length or chunked encoding) is answered "
            "by the HTTP server before the app, in text/plain.")
DB_503 = "The database is not reachable or too busy, or the job queue is down; Retry-After says when to retry."


def _document(op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    has_body = "requestBody" in op
    responses["400"] = {"description": (BODY_400 if has_body else "") + HTTP_400,
                        "content": {**(PROBLEM if has_body else {}), **SERVER_400}}
    if op.get("security"):
        responses.setdefault("503", {"description": DB_503, "content": PROBLEM})
    if "422" in responses:
        responses["422"]["content"] = PROBLEM


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` list the answers above (built once, as FastAPI caches it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("ProblemDocument", ProblemDocument.model_json_schema(
            ref_template="#/components/schemas/{model}"))
        for operations in schema.get("paths", {}).values():
            for op in operations.values():
                _document(op)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
