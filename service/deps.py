"""Annotated dependencies shared by the routers."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from promptehr.service.auth import ApiKeyDep, TenantDep, require_api_key
from promptehr.service.db import SessionDep
from promptehr.service.settings import Settings


async def get_app_settings(request: Request) -> Settings:
    # async: no I/O, so FastAPI calls it on the event loop instead of on a thread
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]

__all__ = ["ApiKeyDep", "SessionDep", "SettingsDep", "TenantDep", "require_api_key"]
