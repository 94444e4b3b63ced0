"""API keys: only their sha256 is stored (service/auth.py makes and checks them)."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import ApiKey
from service.store.base import start_write


def create_api_key(session: Session, *, name: str, key_hash: str, prefix: str) -> ApiKey:
    start_write(session)
    key = ApiKey(name=name, key_hash=key_hash, prefix=prefix)
    session.add(key)
    session.commit()
    return key


def get_api_key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    """The key with this hash, unless it was revoked."""
    return session.scalar(sa.select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))
