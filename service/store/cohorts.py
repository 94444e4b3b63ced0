"""Cohorts, their shards (each a job of kind "generate") and their patients.

A cohort of n patients is split into shards of `shard_size`; shard i generates patients
i*shard_size ... and stores them keyed by (cohort_id, index). What claiming and finishing a shard
writes to its cohort is the job state machine's (service/store/lifecycle.py, job_kinds.py).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from promptehr.service.models import Cohort, CohortPatient, CohortShard, Report
from promptehr.service.models.base import JobStatus
from promptehr.service.store.base import get_owned, page, run_update, start_write
from promptehr.service.store.lifecycle import LIVE_COHORT, InUse, cohort_jobs_finished
from promptehr.service.store.quotas import QuotaLimits, enforce_quota

# insert ... on conflict do nothing, per dialect (the two supported ones)
INSERT_BY_DIALECT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


# --- cohorts and shards ---------------------------------------------------------------------------


def _shards(cohort: Cohort) -> list[CohortShard]:
    shards = []
    for i in range(cohort.n_shards):
        start = i * cohort.shard_size
        count = min(cohort.shard_size, cohort.n_patients - start)
        shards.append(
            CohortShard(
                cohort_id=cohort.id,
                shard_index=i,
                start_index=start,
                count=count,
                status=JobStatus.queued.value,
                progress={"done": 0, "total": count, "unit": "patients"},
            )
        )
    return shards


def create_cohort(
    session: Session, *, model_id: str, n_patients: int, seed: int, spec: dict[str, Any], shard_size: int,
    tenant: str | None = None, quota: QuotaLimits | None = None,
) -> tuple[Cohort, list[CohortShard]]:
    """A queued cohort and its queued shards (each shard is a "generate" job), owned by `tenant`;
    `quota`: its tenant's limits (QuotaExceeded: nothing written)."""
    start_write(session)
    cohort = Cohort(
        tenant=tenant,
        model_id=model_id,
        n_patients=n_patients,
        seed=seed,
        spec=spec,
        shard_size=shard_size,
        n_shards=max(1, math.ceil(n_patients / shard_size)),
        shards_done=0,
        status=JobStatus.queued.value,
        progress={"done": 0, "total": n_patients, "unit": "patients"},
    )
    session.add(cohort)
    session.flush()
    shards = _shards(cohort)
    session.add_all(shards)
    session.flush()
    enforce_quota(session, tenant, quota, jobs=1, patients=n_patients)
    session.commit()
    return cohort, shards


def get_cohort(session: Session, cohort_id: str, *, tenant: str | None = None) -> Cohort | None:
    return get_owned(session, Cohort, cohort_id, tenant)


def list_cohorts(session: Session, *, limit: int, after: tuple[datetime, str] | None = None,
                 tenant: str | None = None) -> list[Cohort]:
    return page(session, Cohort, limit=limit, after=after, tenant=tenant)


def get_shard(session: Session, shard_id: str) -> CohortShard | None:
    return session.get(CohortShard, shard_id)


def cohort_progress(session: Session, cohort: Cohort) -> dict[str, Any]:
    """{"done": patients stored, "total": n_patients, "unit": "patients"}."""
    return {"done": count_patients(session, cohort.id), "total": cohort.n_patients, "unit": "patients"}


# --- patients -------------------------------------------------------------------------------------


def insert_patients(
    session: Session, cohort_id: str, start_index: int, patients: Sequence[dict[str, Any]]
) -> None:
    """Store patients at indices start_index, start_index+1, ... Rows whose (cohort_id, index) exists
    already are left alone, so a redelivered shard cannot duplicate patients."""
    if not patients:
        return
    rows = [{"cohort_id": cohort_id, "index": start_index + i, "patient": p} for i, p in enumerate(patients)]
    start_write(session)
    dialect = session.get_bind().dialect.name
    if dialect not in INSERT_BY_DIALECT:  # pragma: no cover - only the two supported dialects
        raise NotImplementedError(f"insert ... on conflict do nothing on {dialect}")
    stmt = INSERT_BY_DIALECT[dialect](CohortPatient.__table__).on_conflict_do_nothing(
        index_elements=["cohort_id", "index"]
    )
    session.execute(stmt, rows)
    session.commit()


def list_patients(session: Session, cohort_id: str, *, after_index: int = -1, limit: int = 100) -> list[CohortPatient]:
    """Up to `limit` patients with index > after_index, in index order."""
    return list(
        session.scalars(
            sa.select(CohortPatient)
            .where(CohortPatient.cohort_id == cohort_id, CohortPatient.index > after_index)
            .order_by(CohortPatient.index)
            .limit(limit)
        )
    )


def iter_patients(session: Session, cohort_id: str, *, chunk: int = 500) -> Iterator[list[CohortPatient]]:
    """All patients of a cohort in index order, `chunk` rows at a time (keyset pages, never all at once)."""
    after = -1
    while True:
        rows = list_patients(session, cohort_id, after_index=after, limit=chunk)
        if not rows:
            return
        yield rows
        session.expunge_all()  # keep the identity map from growing with the cohort
        after = rows[-1].index
        if len(rows) < chunk:
            return


def stored_prefix(session: Session, cohort_id: str, start: int, count: int) -> int:
    """How many of patients start, start+1, ... (at most `count`) are stored already, without a gap:
    where a redelivered shard resumes."""
    n = 0
    for row in list_patients(session, cohort_id, after_index=start - 1, limit=count):
        if row.index != start + n:
            break
        n += 1
    return n


def count_patients(session: Session, cohort_id: str) -> int:
    return session.scalar(
        sa.select(sa.func.count()).select_from(CohortPatient).where(CohortPatient.cohort_id == cohort_id)
    )


# --- deleting -------------------------------------------------------------------------------------


def delete_cohort(session: Session, cohort_id: str) -> bool:
    """Delete a finished cohort with its patients, shards and report. False: no such cohort. InUse
    while the cohort or one of its jobs is queued or running (a worker may still write to it)."""
    start_write(session)
    # The first write takes the row, and only while nothing runs in it: no worker can start
    # on a finished cohort (claims need it queued or running), so nothing can begin after this.
    taken = run_update(session, sa.update(Cohort).where(
        Cohort.id == cohort_id, Cohort.status.not_in(LIVE_COHORT), *cohort_jobs_finished(Cohort.id),
    ).values(cancel_requested=True))
    if taken != 1:
        session.rollback()
        if session.get(Cohort, cohort_id) is None:
            return False
        raise InUse("The cohort is still being generated or evaluated; cancel it first (POST /cohorts/{id}/cancel).")
    # Children first, by hand: the database's ON DELETE CASCADE would do it, but this does not
    # depend on SQLite's foreign_keys pragma being on for the connection.
    for table in (CohortPatient, CohortShard, Report):
        run_update(session, sa.delete(table).where(table.cohort_id == cohort_id))
    run_update(session, sa.delete(Cohort).where(Cohort.id == cohort_id))
    session.commit()
    return True
