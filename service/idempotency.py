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

import sqlalchemy as sa
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.models import ApiKey, IdempotencyKey
from service.models.base import utcnow
from service.problems import Problem, field_error, validation_problem
from service.settings import Settings

HEADER = "Idempotency-Key"
IN_PROGRESS = 0  # status_code of a key whose first request has not answered yet

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
    if record.status_code == IN_PROGRESS:
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
    key = request.headers.get(HEADER)
    if key is None:
        status, body, location = create()
        return _response(status, jsonable_encoder(body), location)
    if not 1 <= len(key) <= 255:
        raise validation_problem([field_error(["header", HEADER], "must be 1 to 255 characters")])

    endpoint = f"{request.method} {request.url.path}"
    request_hash = _request_hash(payload)
    now = utcnow()
    session.commit()  # begin the next transaction with a write (see service.store._start_write)
    session.execute(
        # this API key's expired keys (this one included, if it expired): the table stays small
        sa.delete(IdempotencyKey).where(IdempotencyKey.api_key_id == api_key.id, IdempotencyKey.expires_at <= now)
    )
    existing = session.get(IdempotencyKey, (api_key.id, key))
    if existing is not None:
        session.commit()
        return _replay(existing, endpoint, request_hash)

    # Reserve the key first, so that two concurrent requests cannot both create.
    record = IdempotencyKey(
        api_key_id=api_key.id,
        key=key,
        endpoint=endpoint,
        request_hash=request_hash,
        status_code=IN_PROGRESS,
        response={},
        expires_at=now + timedelta(seconds=settings.idempotency_ttl_seconds),
    )
    session.add(record)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = session.get(IdempotencyKey, (api_key.id, key))
        if existing is None:  # expired and deleted in between: extremely unlikely
            raise Problem(409, f"A request with this {HEADER} is still being processed.", type="idempotency-in-progress")
        return _replay(existing, endpoint, request_hash)

    try:
        status, body, location = create()
    except BaseException:
        session.rollback()
        session.execute(
            sa.delete(IdempotencyKey).where(IdempotencyKey.api_key_id == api_key.id, IdempotencyKey.key == key)
        )
        session.commit()
        raise
    body = jsonable_encoder(body)
    if status < 500:
        session.execute(
            sa.update(IdempotencyKey)
            .where(IdempotencyKey.api_key_id == api_key.id, IdempotencyKey.key == key)
            .values(status_code=status, response=body, location=location),
            execution_options={"synchronize_session": False},
        )
    else:
        session.execute(
            sa.delete(IdempotencyKey).where(IdempotencyKey.api_key_id == api_key.id, IdempotencyKey.key == key)
        )
    session.commit()
    return _response(status, body, location)
