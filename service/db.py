"""Engines and sessions. Nothing is built at import time: the app factory and the worker call these."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from promptehr.service.settings import Settings


def make_engine(url: str, **kwargs) -> sa.Engine:
    """An engine for `url`. SQLite gets real transactions (so savepoints work), foreign keys, WAL
    and a busy timeout, so the API and in-process job threads can share the file."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(url, **kwargs)

    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", 30)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (pysqlite's own handling
        # breaks SAVEPOINT); see SQLAlchemy's "Serializable isolation / Savepoints" notes for pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if database and database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN")

    return engine


def api_pool_options(settings: Settings) -> dict:
    """make_engine's pool arguments for the API (settings.database_pool_*). An in-memory SQLite
    database has a connection per thread (SingletonThreadPool), which takes none of them."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return {}
    return {"pool_size": settings.database_pool_size, "max_overflow": settings.database_max_overflow,
            "pool_timeout": settings.database_pool_timeout_seconds}


def pool_is_full(engine: sa.Engine, settings: Settings) -> bool:
    """Every connection the API's pool may open is checked out: the next checkout waits."""
    pool = engine.pool
    if not isinstance(pool, sa.pool.QueuePool):
        return False
    return pool.checkedout() >= settings.database_pool_size + settings.database_max_overflow


def make_sessionmaker(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """FastAPI dependency: one session per request, from the app's session factory.

    Async so that FastAPI runs it on the event loop rather than sending its set-up and its clean-up
    each to a thread of its own: making a Session does no I/O (it takes a connection when first used),
    and neither does closing one that holds no connection (a request that committed last). Closing
    one that does (its transaction is still open: a read) rolls back over the network, on a thread."""
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]
