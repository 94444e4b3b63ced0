"""Idempotency keys: the first answer to a POST made with an Idempotency-Key, per API key, kept until
it expires (service/idempotency.py replays it). A key is reserved (status_code IN_PROGRESS) before
the request creates anything, so that two concurrent requests with one key cannot both create."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from promptehr.service.models import IdempotencyKey
from promptehr.service.models.base import utcnow

IN_PROGRESS = 0  # status_code of a key whose first request has not answered yet


def reserve_idempotency_key(
    session: Session, *, api_key_id: str, key: str, endpoint: str, request_hash: str, ttl: timedelta
) -> IdempotencyKey | None:
    """Reserve `key` for this request and return None, or, when the key is taken, return its record
    (a retry: replay it). This API key's expired keys are deleted first (this one too, if it expired):
    the table stays small."""
    now = utcnow()
    session.commit()  # begin the next transaction with a write (see service.store.base.start_write)
    session.execute(
        sa.delete(IdempotencyKey).where(IdempotencyKey.api_key_id == api_key_id, IdempotencyKey.expires_at <= now)
    )
    existing = session.get(IdempotencyKey, (api_key_id, key))
    if existing is not None:
        session.commit()
        return existing
    session.add(
        IdempotencyKey(
            api_key_id=api_key_id,
            key=key,
            endpoint=endpoint,
            request_hash=request_hash,
            status_code=IN_PROGRESS,
            response={},
            expires_at=now + ttl,
        )
    )
    try:
        session.commit()
    except IntegrityError:  # a concurrent request reserved it first
        session.rollback()
        existing = session.get(IdempotencyKey, (api_key_id, key))
        if existing is None:  # ... and it expired and was deleted in between (extremely unlikely):
            # answer as for a key still in progress
            existing = IdempotencyKey(
                api_key_id=api_key_id, key=key, endpoint=endpoint, request_hash=request_hash,
                status_code=IN_PROGRESS, response={},
            )
        return existing
    return None


def _this_key(api_key_id: str, key: str):
    return (IdempotencyKey.api_key_id == api_key_id, IdempotencyKey.key == key)


def save_idempotent_response(
    session: Session, api_key_id: str, key: str, *, status_code: int, response: dict[str, Any], location: str | None
) -> None:
    """Keep the first answer of the request that reserved `key`, to replay it."""
    session.execute(
        sa.update(IdempotencyKey)
        .where(*_this_key(api_key_id, key))
        .values(status_code=status_code, response=response, location=location),
        execution_options={"synchronize_session": False},
    )
    session.commit()


def release_idempotency_key(session: Session, api_key_id: str, key: str) -> None:
    """Forget a reserved key (its request created nothing, or failed with a 5xx): a retry may use it."""
    session.execute(sa.delete(IdempotencyKey).where(*_this_key(api_key_id, key)))
    session.commit()
