"""API keys: only their sha256 is stored (service/auth.py makes and checks them); a key belongs to a
tenant, may be an admin key, may expire, and is revoked rather than deleted (its id stays in listings
and in the idempotency keys it made)."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from promptehr.service.models import ApiKey
from promptehr.service.models.base import utcnow
from promptehr.service.store.base import run_update, start_write


def create_api_key(session: Session, *, name: str, key_hash: str, prefix: str, tenant: str | None = None,
                   is_admin: bool = False, expires_at: datetime | None = None) -> ApiKey:
    """`tenant` None: the key's name (keys made with one name share what they create)."""
    start_write(session)
    key = ApiKey(name=name, key_hash=key_hash, prefix=prefix, tenant=tenant or name, is_admin=is_admin,
                 expires_at=expires_at)
    session.add(key)
    session.commit()
    return key


def get_api_key_by_hash(session: Session, key_hash: str, *, now: datetime | None = None) -> ApiKey | None:
    """The key with this hash, unless it was revoked or has expired (by `now`, default the clock)."""
    now = now or utcnow()
    return session.scalar(sa.select(ApiKey).where(
        ApiKey.key_hash == key_hash,
        ApiKey.revoked_at.is_(None),
        sa.or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
    ))


def get_api_key(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def list_api_keys(session: Session) -> list[ApiKey]:
    """Every key, revoked and expired ones too, oldest first (operators have tens of keys, not
    thousands: no pages)."""
    return list(session.scalars(sa.select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_api_key(session: Session, key_id: str) -> ApiKey | None:
    """Revoke the key now (a revoked key stays revoked: its first revocation time is kept). None when
    there is no such key."""
    start_write(session)
    run_update(session, sa.update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
               .values(revoked_at=utcnow()))
    session.commit()
    return session.get(ApiKey, key_id)
