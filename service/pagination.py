"""Cursor pages: `?limit=&cursor=` -> {"items": [...], "next": "<link to the next page>"}; `next` is
absent on the last page. Cursors are opaque: base64url (unpadded) JSON of the last row's sort key.

A cursor is strictly validated rather than signed: it is accepted only in the exact form this API
writes (the decoded key re-encodes to the same string) and only with values the database can take,
so any tampering is a 422 naming `query.cursor`, and no secret has to be shared between API
processes or survive a restart. A well-formed cursor that the API did not write is harmless: it
names a position in the same ordering, which a client could reach by paging anyway.
"""
from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from promptehr.service.links import public_link
from promptehr.service.problems import field_error, validation_problem
from promptehr.service.settings import Settings

T = TypeVar("T")

LimitQuery = Annotated[int | None, Query(ge=1, description="Items per page (at most the server's maximum).")]
CursorQuery = Annotated[str | None, Query(max_length=500, description="The `next` link's cursor.")]

# Row ids are uuid4 strings in String(36) columns; printable ASCII only (no NUL, which PostgreSQL
# text refuses).
_RowId = Annotated[str, StringConstraints(min_length=1, max_length=36, pattern=r"^[\x21-\x7e]+$")]
# (created_at, id) of the last row of a page ordered by (created_at, id).
TIME_KEY = TypeAdapter(tuple[AwareDatetime, _RowId])
# A patient's index: an INTEGER column (32 bits on PostgreSQL; SQLite overflows past 64 bits).
INDEX_KEY = TypeAdapter(Annotated[int, Field(ge=0, le=2**31 - 1)])


class Page(BaseModel, Generic[T]):
    items: list[T]
    next: str | None = None


def _bad_cursor():
    return validation_problem([field_error(["query", "cursor"], "not a cursor from this API")])


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, key: TypeAdapter) -> Any:
    """The sort key a cursor of this API holds, validated by `key` (strict: no coercion)."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        value = key.validate_json(raw, strict=True)
    except (binascii.Error, ValueError, ValidationError):  # ValueError: non-ASCII text
        raise _bad_cursor() from None
    return value


def _canonical(cursor: str, value: Any) -> None:
    if encode_cursor(value) != cursor:  # another spelling of the JSON or of its base64
        raise _bad_cursor()


def effective_limit(limit: int | None, settings: Settings) -> int:
    return min(limit or settings.default_page_limit, settings.max_page_limit)


def decode_time_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """(created_at, id) of the last row of the previous page, in UTC as the API writes it."""
    if cursor is None:
        return None
    at, last_id = decode_cursor(cursor, TIME_KEY)
    # Only UTC offsets: an offset such as +14:00 on 0001-01-01 has no UTC value (OverflowError).
    if at.utcoffset() != timedelta(0):
        raise _bad_cursor()
    _canonical(cursor, [at.isoformat(), last_id])
    return at, last_id


def decode_index_cursor(cursor: str | None) -> int:
    """The index of the last patient of the previous page (-1 before the first page)."""
    if cursor is None:
        return -1
    index = decode_cursor(cursor, INDEX_KEY)
    _canonical(cursor, index)
    return index


def page_body(request: Request, items: list[dict], next_cursor: str | None, limit: int) -> JSONResponse:
    """The page as a response (built here so that `next` is absent, not null, on the last page).
    `next` never names the request's Host (see service/links.py)."""
    body: dict[str, Any] = {"items": items}
    if next_cursor is not None:
        url = request.url.include_query_params(cursor=next_cursor, limit=limit)
        body["next"] = public_link(request, f"{url.path}?{url.query}")
    return JSONResponse(body)


def time_page(request: Request, rows: list, limit: int, to_public) -> JSONResponse:
    """A page of rows ordered by (created_at, id); `rows` was fetched with limit + 1."""
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor([rows[-1].created_at.isoformat(), rows[-1].id]) if more and rows else None
    return page_body(request, [to_public(r) for r in rows], nxt, limit)
