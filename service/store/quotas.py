"""Quotas of a tenant: how many jobs (training jobs and cohorts) it may have queued or running at once,
and how many patients it may have waiting to be generated (the patients of its queued and running
shards). The API's settings give the limits (service/quotas.py); a creating store function checks
them in the transaction that writes the new rows, after writing them, so that concurrent requests
cannot all pass the check and together go over the limit:

- SQLite: the INSERT took the database's write lock; a concurrent request waits until this
  transaction has committed (or rolled back) and then counts this one's rows.
- PostgreSQL: a transaction-scoped advisory lock per tenant, taken after the INSERT and held until
  COMMIT; the next request's count runs after it and (READ COMMITTED) sees what this one committed.
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from promptehr.service.models import Cohort, CohortShard, TrainingJob
from promptehr.service.models.base import JobStatus

ACTIVE = (JobStatus.queued.value, JobStatus.running.value)
# The first key of the two-key advisory lock: this module's locks apart from any other use of them.
ADVISORY_LOCK_SPACE = 0x51_0A_7A


@dataclass(frozen=True)
class QuotaLimits:
    """0 for either limit: none."""

    max_active_jobs: int = 0
    max_queued_patients: int = 0


class QuotaExceeded(Exception):
    """A creation that would take its tenant over a quota; nothing of it was written."""

    def __init__(self, quota: str, limit: int, current: int):
        self.quota = quota  # "active_jobs" or "queued_patients"
        self.limit = limit
        self.current = current  # what the tenant holds without the refused request
        noun = "jobs queued or running" if quota == "active_jobs" else "patients waiting to be generated"
        super().__init__(f"quota exceeded: at most {limit} {noun} per tenant; it has {current}")


def active_jobs(session: Session, tenant: str) -> int:
    """The tenant's training jobs and cohorts that are queued or running."""
    counts = [
        session.scalar(sa.select(sa.func.count()).select_from(model)
                       .where(model.tenant == tenant, model.status.in_(ACTIVE)))
        for model in (TrainingJob, Cohort)
    ]
    return sum(counts)


def queued_patients(session: Session, tenant: str) -> int:
    """Patients of the tenant's shards that are queued or running (not generated yet)."""
    return session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(CohortShard.count), 0))
        .join(Cohort, Cohort.id == CohortShard.cohort_id)
        .where(Cohort.tenant == tenant, CohortShard.status.in_(ACTIVE))
    )


def _lock_tenant(session: Session, tenant: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK_SPACE, sa.func.hashtext(tenant))))


def enforce_quota(session: Session, tenant: str | None, limits: QuotaLimits | None, *, jobs: int,
                  patients: int = 0) -> None:
    """Call after flushing the rows of a new request (`jobs` jobs, `patients` patients), before its
    COMMIT. Over a limit: roll the transaction back and raise QuotaExceeded. No tenant (a caller that
    is not a client, such as a test's fixture) or no limits: nothing to check."""
    if tenant is None or limits is None:
        return
    _lock_tenant(session, tenant)
    checks = [("active_jobs", limits.max_active_jobs, jobs, lambda: active_jobs(session, tenant))]
    if patients:
        checks.append(("queued_patients", limits.max_queued_patients, patients,
                       lambda: queued_patients(session, tenant)))
    for quota, limit, requested, count in checks:
        if not limit:
            continue
        held = count()  # with this request's rows
        if held > limit:
            session.rollback()
            raise QuotaExceeded(quota, limit, held - requested)
