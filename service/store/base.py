"""What every store module shares: how a write begins, how an UPDATE runs, keyset pages, the tenant
filter."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from promptehr.service.models.base import UTCDateTime


def start_write(session: Session) -> None:
    """On SQLite, end the caller's open transaction so that the one that follows begins with a write.

    On SQLite (WAL) a transaction that reads first and writes later fails at once with "database is
    locked" when another connection wrote in between; one that begins with its write waits for the
    lock (busy timeout) instead. PostgreSQL has no such problem (row locks, and each statement of a
    READ COMMITTED transaction sees what was committed before it began), so there the caller's reads
    and the write share one transaction: a request that checks a row and then writes costs one
    connection check-out and one COMMIT instead of two (POST /cohorts: see docs/performance.md)."""
    if session.get_bind().dialect.name == "sqlite":
        session.commit()


def run_update(session: Session, stmt) -> int:
    """Run an UPDATE through the session; returns its row count. Loaded objects are expired (they
    reload on next access, as after a commit)."""
    result = session.execute(stmt, execution_options={"synchronize_session": False})
    session.expire_all()
    return result.rowcount


def now_literal(now: datetime):
    """`now` as a SQL value (for expressions such as coalesce(started_at, now))."""
    return sa.literal(now, UTCDateTime())


def owned_by(model, tenant: str | None) -> tuple:
    """The WHERE clause that keeps a table's rows to `tenant`'s (service.models.base.TenantMixin);
    none for tenant None, what an admin key and the workers see (ApiKey.tenant_filter). Rows of no
    tenant (made before tenants) match no tenant, so only admins see them."""
    return () if tenant is None else (model.tenant == tenant,)


def get_owned(session: Session, model, row_id: str, tenant: str | None, **options):
    """The row with this id, or None when there is none or it is another tenant's (the API answers
    404 for both: a key cannot learn what other tenants hold)."""
    row = session.get(model, row_id, **options)
    if row is None or (tenant is not None and row.tenant != tenant):
        return None
    return row


def page(session: Session, model, *, limit: int, after: tuple[datetime, str] | None, where=(),
         tenant: str | None = None) -> list:
    """Rows ordered by (created_at, id), those after the cursor `after`, of `tenant` (None: all)."""
    stmt = sa.select(model).where(*where, *owned_by(model, tenant)).order_by(model.created_at, model.id).limit(limit)
    if after is not None:
        at, last_id = after
        stmt = stmt.where(
            sa.or_(model.created_at > at, sa.and_(model.created_at == at, model.id > last_id))
        )
    return list(session.scalars(stmt))
