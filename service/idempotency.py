"""Idempotency-Key on POST: a retried request with the same key and body gets the first answer (same
status, body and Location); the same key with a different body or route is refused with 422; a key
whose first request is still being processed answers 409. Keys are per API key and expire after
settings.idempotency_ttl_seconds."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from promptehr.service import store
from promptehr.service.models import ApiKey, IdempotencyKey
from promptehr.service.problems import Problem, field_error, validation_problem
from promptehr.service.settings import Settings

HEADER = "Idempotency-Key"

# What a creating route returns: (status, body, Location).
Created = tuple[int, dict[str, Any], str | None]


def _request_hash(payload: BaseModel) -> str:
    canonical = json.dumps(payload.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _response(status: int, body: dict, location: str | None, replayed: bool = False) -> JSONResponse:
    headers = {}
    if location:
        headers["Location"] = location
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=status, headers=headers)


def _replay(record: IdempotencyKey, endpoint: str, request_hash: str) -> JSONResponse:
    if record.endpoint != endpoint or record.request_hash != request_hash:
        raise validation_problem(
            [field_error(["header", HEADER], "this key was used with a different request")],
            detail=f"The {HEADER} was already used with a different request; use a new key.",
        )
    if record.status_code == store.IN_PROGRESS:
        raise Problem(409, f"A request with this {HEADER} is still being processed.", type="idempotency-in-progress")
    return _response(record.status_code, record.response, record.location, replayed=True)


def idempotent_create(
    request: Request,
    session: Session,
    settings: Settings,
    api_key: ApiKey,
    payload: BaseModel,
    create: Callable[[], Created],
) -> JSONResponse:
    """Answer a creating POST: with no Idempotency-Key, `create()`'s answer; with one, the first
    answer given to that key (or `create()`'s, kept for the key's retries)."""
    key = request.headers.get(HEADER)
    if key is None:
        status, body, location = create()
        return _response(status, jsonable_encoder(body), location)
    if not 1 <= len(key) <= 255:
        raise validation_problem([field_error(["header", HEADER], "must be 1 to 255 characters")])

    endpoint = f"{request.method} {request.url.path}"
    request_hash = _request_hash(payload)
    existing = store.reserve_idempotency_key(
        session, api_key_id=api_key.id, key=key, endpoint=endpoint, request_hash=request_hash,
        ttl=timedelta(seconds=settings.idempotency_ttl_seconds),
    )
    if existing is not None:
        return _replay(existing, endpoint, request_hash)
    return _response(*_create_holding_key(session, api_key.id, key, create))


def _create_holding_key(session: Session, api_key_id: str, key: str, create: Callable[[], Created]) -> Created:
    """Run `create()` with `key` reserved; keep its answer for the key's retries, unless it raised or
    answered 5xx (then the key is released: a retry may succeed)."""
    try:
        status, body, location = create()
    except BaseException:
        session.rollback()
        store.release_idempotency_key(session, api_key_id, key)
        raise
    body = jsonable_encoder(body)
    if status < 500:
        store.save_idempotent_response(session, api_key_id, key, status_code=status, response=body, location=location)
    else:
        store.release_idempotency_key(session, api_key_id, key)
    return status, body, location
