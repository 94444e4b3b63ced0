"""A cohort's export over HTTP: its patients read from the store a page at a time and written by
model/data/export.py, the one implementation (`promptehr generate` writes files with it too), so the
API and the CLI give the same bytes for the same patients. Memory holds about one page.

An export can last as long as its client reads slowly, so it holds no database connection while
it streams: each page is read in a short transaction of its own (keyset by patient index) and the
session is closed, its connection back in the pool, before the page's bytes go out. (A separate,
bounded pool for exports was the other way: it would still let a few slow readers block every
export, and cap downloads at its size; a connection per page costs one checkout, microseconds from
a warm pool, per `export_chunk_rows` patients.)
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Iterable, Iterator

import sqlalchemy.exc as sa_exc
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from promptehr.model.patient import Patient
from promptehr.service import store

log = logging.getLogger(__name__)

# format -> (media type, file extension)
FORMATS = {
    "jsonl": ("application/x-ndjson", "jsonl"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "mimic3": ("application/zip", "zip"),
    "mimic4": ("application/zip", "zip"),
}

# Tries at a page when the pool is full (each waits settings.database_pool_timeout_seconds). Before
# the first byte a full pool is a 503; once the client has its 200 and part of the file, waiting a
# little longer is better than cutting the download.
PAGE_ATTEMPTS = 3


class ExportIncomplete(RuntimeError):
    """The cohort's patients ended before its size: it was deleted while being exported. Raised
    mid-stream, so the response is cut off (no final chunk) rather than ending as a short file."""


def _page(session: Session, cohort_id: str, after: int, limit: int) -> list[tuple[int, dict]]:
    """(index, patient record) of up to `limit` patients after index `after`, read in a transaction
    that is over (the session closed, its connection released) when this returns."""
    attempt = 1
    while True:
        try:
            return [(row.index, row.patient) for row in
                    store.list_patients(session, cohort_id, after_index=after, limit=limit)]
        except sa_exc.TimeoutError:
            if attempt >= PAGE_ATTEMPTS:
                raise
            log.warning("export of cohort %s: no free database connection, try %d of %d",
                        cohort_id, attempt, PAGE_ATTEMPTS)
            attempt += 1
        finally:
            session.close()


def cohort_patients(session: Session, cohort_id: str, page: int, total: int | None = None) -> Iterator[Patient]:
    """The cohort's patients in index order, read `page` rows at a time, each page in a transaction
    of its own. `total`: how many there must be (ExportIncomplete at the end when fewer)."""
    after, sent = -1, 0
    while True:
        rows = _page(session, cohort_id, after, page)
        for _, record in rows:
            yield Patient.from_dict(record)
        sent += len(rows)
        if len(rows) < page:
            break
        after = rows[-1][0]
    if total is not None and sent != total:
        raise ExportIncomplete(f"cohort {cohort_id}: {sent} of {total} patients left to export")


class Unexportable(ValueError):
    """The format cannot hold the cohort's code systems (model.data.export.check_exportable): told
    apart from any other ValueError, since it is the request's `format` that is wrong."""


_END = object()


async def gated(chunks: Iterator[bytes], gate: asyncio.Semaphore) -> AsyncIterator[bytes]:
    """`chunks` made on the thread pool one at a time, at most `gate`'s size of all exports at once
    (settings.export_concurrency); an export waiting for its turn waits on the event loop, holding
    neither a thread of the pool (which the other routes' handlers need) nor a connection."""
    try:
        while True:
            async with gate:
                chunk = await run_in_threadpool(next, chunks, _END)
            if chunk is _END:
                return
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:  # the client went away: let the generators run their clean-up
            close()


def stream(fmt: str, session: Session, cohort_id: str, page: int = 500,
           code_systems: Iterable[str] = ("icd9",), total: int | None = None,
           start_date: dt.date | None = None) -> tuple[str, Iterator[bytes]]:
    """(where its dates come from, "learned" | "invented"; the export's bytes, a chunk about every
    `page` rows). `code_systems`: those of the cohort's model; `total`: the cohort's size;
    `start_date`: the first visit's date of records with time (None: the export's default).
    Unexportable, from this call and before any byte, where `fmt` cannot hold the systems (a MIMIC-III
    zip of ICD-10-CM codes). The first page is read here, since the response's header names the
    dates' kind and the first patient decides it (model.data.export.peek_dates). The session's
    transaction (the route's reads) ends here: the connection goes back to the pool before the
    response starts."""
    # Imported here: model.data's package imports pandas (about 0.8 s of the app's 3.3 s start-up,
    # measured), which no other route needs at start-up either (routes/datasets.py waits the same way).
    from promptehr.model.data.export import check_exportable, export_bytes, peek_dates

    code_systems = tuple(code_systems)
    try:
        check_exportable(fmt, code_systems)  # before the first page is read
    except ValueError as e:
        raise Unexportable(str(e)) from None
    session.close()
    dates, patients = peek_dates(cohort_patients(session, cohort_id, page, total))
    return dates, export_bytes(patients, fmt, rows=page, code_systems=code_systems, start_date=start_date)
