"""API keys: generated with high entropy, stored as sha256, checked on every route but the probes.
A key that is unknown, revoked or past its expiry is a 401. The key's tenant scopes what it sees
(`TenantDep`: the tenant filter the routes hand the store; None for an admin key)."""
from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader

from promptehr.service import store
from promptehr.service.db import SessionDep
from promptehr.service.models import ApiKey
from promptehr.service.problems import Problem

KEY_PREFIX = "pehr_"

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key made with `promptehr apikey create --name NAME`."
)


def generate_key() -> str:
    """A new key: 'pehr_' and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def require_api_key(session: SessionDep, key: Annotated[str | None, Security(api_key_header)] = None) -> ApiKey:
    if not key:
        raise Problem(401, "Send an API key in the X-API-Key header.", type="unauthorized",
                      headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})
    found = store.get_api_key_by_hash(session, hash_key(key))
    if found is None:  # one answer for all three: the caller learns nothing about other keys
        raise Problem(401, "The API key is not valid (unknown, revoked or expired).", type="unauthorized",
                      headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})
    return found


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]


async def caller_tenant(api_key: ApiKeyDep) -> str | None:
    # async: no I/O (require_api_key, cached per request, did the lookup), so it runs on the event loop
    return api_key.tenant_filter


TenantDep = Annotated[str | None, Depends(caller_tenant)]
