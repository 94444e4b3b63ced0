"""Cursor pages: `?limit=&cursor=` -> {"items": [...], "next": "<url of the next page>"}; `next` is
absent on the last page. Cursors are opaque (base64url JSON of the last row's sort key)."""
from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.problems import field_error, validation_problem
from service.settings import Settings

T = TypeVar("T")

LimitQuery = Annotated[int | None, Query(ge=1, description="Items per page (at most the server's maximum).")]
CursorQuery = Annotated[str | None, Query(max_length=500, description="The `next` link's cursor.")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next: str | None = None


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise validation_problem([field_error(["query", "cursor"], "not a cursor from this API")]) from None


def effective_limit(limit: int | None, settings: Settings) -> int:
    return min(limit or settings.default_page_limit, settings.max_page_limit)


def decode_time_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """(created_at, id) of the last row of the previous page."""
    if cursor is None:
        return None
    value = decode_cursor(cursor)
    try:
        at, last_id = value
        return datetime.fromisoformat(at), str(last_id)
    except (TypeError, ValueError):
        raise validation_problem([field_error(["query", "cursor"], "not a cursor from this API")]) from None


def page_body(request: Request, items: list[dict], next_cursor: str | None, limit: int) -> JSONResponse:
    """The page as a response (built here so that `next` is absent, not null, on the last page)."""
    body: dict[str, Any] = {"items": items}
    if next_cursor is not None:
        body["next"] = str(request.url.include_query_params(cursor=next_cursor, limit=limit))
    return JSONResponse(body)


def time_page(request: Request, rows: list, limit: int, to_public) -> JSONResponse:
    """A page of rows ordered by (created_at, id); `rows` was fetched with limit + 1."""
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor([rows[-1].created_at.isoformat(), rows[-1].id]) if more and rows else None
    return page_body(request, [to_public(r) for r in rows], nxt, limit)
