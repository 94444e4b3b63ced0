"""The job state machine, the same for every kind (service/store/job_kinds.py says what differs):

    queued --claim_job--> running --mark_succeeded / mark_failed / mark_cancelled--> finished
                          running --claim_job by another worker, heartbeat stale--> running (taken over)

A worker's life with a job: `claim_job` (False: someone else has it, or it is finished or cancelled:
ack the message and do nothing), then `update_progress`/`heartbeat` while working, checking
`is_cancel_requested` (then `mark_cancelled`), and at the end `mark_succeeded` or `mark_failed`.

Claim rule (race-free because it is one conditional UPDATE; PostgreSQL re-checks the WHERE clause
after a concurrent UPDATE of the row commits, SQLite serialises writers):

    UPDATE <table> SET status='running', claimed_by=:worker, heartbeat_at=now, attempt=attempt+1,
                       started_at=coalesce(started_at, now)
    WHERE id=:id AND cancel_requested=false
      AND (status='queued' OR (status='running' AND heartbeat_at < now - job_stale_after_seconds))

so a redelivered message while the first worker is alive (its heartbeat fresh) does nothing, and a job
whose worker died (no heartbeat for `stale_after`) is taken over.

`live_jobs` is what the workers' sweep reads to find jobs nobody works on (worker/claims.py decides
which of them are orphaned: it can tell a dead claimant process on its own host).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from promptehr.service.models import Cohort
from promptehr.service.models.base import TERMINAL_STATUSES, JobStatus, utcnow
from promptehr.service.store.base import now_literal, run_update, start_write
from promptehr.service.store.job_kinds import JOB_KINDS, LIVE_COHORT, JobKind, job_kind

DEFAULT_STALE_AFTER = timedelta(minutes=10)
MAX_ERROR_CHARS = 4000
ENDED_COHORT = (JobStatus.failed.value, JobStatus.cancelled.value)
COHORT_KINDS = tuple(k for k in JOB_KINDS.values() if k.in_cohort)


class InUse(Exception):
    """A delete refused: something still needs the row (the message says what; the API answers 409)."""


def get_job(session: Session, kind: str, job_id: str):
    """The row of job `job_id` of `kind` (a TrainingJob, CohortShard or Report), or None."""
    return session.get(job_kind(kind).model, job_id)


# --- claiming and holding -------------------------------------------------------------------------


def claim_job(
    session: Session, kind: str, job_id: str, worker_id: str, *, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> bool:
    """Atomically take a job: queued -> running, or take over a running job whose heartbeat is older
    than `stale_after`. True for exactly one of several concurrent callers; False when the job is
    taken, finished, cancelled or does not exist (then the message is acked and dropped)."""
    k = job_kind(kind)
    m = k.model
    start_write(session)
    now = utcnow()
    claimable = sa.or_(
        m.status == JobStatus.queued.value,
        sa.and_(
            m.status == JobStatus.running.value,
            sa.or_(m.heartbeat_at.is_(None), m.heartbeat_at < now - stale_after),
        ),
    )
    stmt = (
        sa.update(m)
        .where(m.id == job_id, m.cancel_requested.is_(False), claimable, *k.claim_where())
        .values(
            status=JobStatus.running.value,
            claimed_by=worker_id,
            heartbeat_at=now,
            attempt=m.attempt + 1,
            started_at=sa.func.coalesce(m.started_at, now_literal(now)),
        )
    )
    if run_update(session, stmt) != 1:
        session.rollback()
        return False
    k.on_claim(session, job_id, now)
    session.commit()
    return True


def heartbeat(session: Session, kind: str, job_id: str, worker_id: str) -> bool:
    """Refresh the claim. False when this worker no longer holds the job (it should stop)."""
    m = job_kind(kind).model
    start_write(session)
    n = run_update(
        session,
        sa.update(m)
        .where(m.id == job_id, m.status == JobStatus.running.value, m.claimed_by == worker_id)
        .values(heartbeat_at=utcnow()),
    )
    session.commit()
    return n == 1


def update_progress(
    session: Session,
    kind: str,
    job_id: str,
    done: float,
    total: float | None = None,
    unit: str | None = None,
    *,
    worker_id: str | None = None,
) -> bool:
    """Set progress {"done", "total", "unit"} of a running job (and refresh its heartbeat).
    `total`/`unit` left None keep their previous values. False when the job is not running (or,
    given worker_id, not held by that worker)."""
    m = job_kind(kind).model
    start_write(session)
    where = [m.id == job_id, m.status == JobStatus.running.value]
    if worker_id is not None:
        where.append(m.claimed_by == worker_id)
    if run_update(session, sa.update(m).where(*where).values(heartbeat_at=utcnow())) != 1:
        session.rollback()
        return False
    old = session.scalar(sa.select(m.progress).where(m.id == job_id)) or {}
    progress = {
        "done": done,
        "total": total if total is not None else old.get("total"),
        "unit": unit if unit is not None else old.get("unit"),
    }
    run_update(session, sa.update(m).where(m.id == job_id).values(progress=progress))
    session.commit()
    return True


def is_cancel_requested(session: Session, kind: str, job_id: str) -> bool:
    """True when the job (for shards and reports: their cohort) was asked to stop, or is gone."""
    k = job_kind(kind)
    m = k.model
    if k.in_cohort:
        # A cohort that failed or was cancelled stops its other running jobs too: their work is lost.
        stmt = (sa.select(sa.or_(Cohort.cancel_requested, Cohort.status.in_(ENDED_COHORT)))
                .join(m, m.cohort_id == Cohort.id).where(m.id == job_id))
    else:
        stmt = sa.select(m.cancel_requested).where(m.id == job_id)
    value = session.scalar(stmt)
    session.commit()  # end the read transaction: the next check must see fresh data
    return True if value is None else bool(value)


# --- finishing ------------------------------------------------------------------------------------


def _finish_where(m, job_id: str, worker_id: str | None) -> list:
    where = [m.id == job_id, m.status.not_in(TERMINAL_STATUSES)]
    if worker_id is not None:
        where.append(m.claimed_by == worker_id)
    return where


def mark_succeeded(
    session: Session, kind: str, job_id: str, *, model_id: str | None = None, worker_id: str | None = None
) -> str | None:
    """Finish a job successfully. "train" needs model_id (from create_model). For "generate",
    returns the id of the cohort's new report when this was the last shard: the caller enqueues
    ("evaluate", report_id). Otherwise returns None. A job already finished is left alone."""
    k = job_kind(kind)
    m = k.model
    values: dict[str, Any] = {"status": JobStatus.succeeded.value, "error": None}
    if k.result_column is not None:
        if model_id is None:
            raise ValueError(f"mark_succeeded({kind!r}, ...) needs model_id")
        values[k.result_column] = model_id
    start_write(session)
    now = utcnow()
    where = _finish_where(m, job_id, worker_id) + k.success_where()
    if run_update(session, sa.update(m).where(*where).values(finished_at=now, **values)) != 1:
        session.rollback()
        return None
    follow_up = k.on_success(session, job_id, now)
    if k.in_cohort and _settle_cancel_request(session, _cohort_of(session, k, job_id), now):
        follow_up = None  # the cohort was cancelled meanwhile: its evaluation was cancelled, not queued
    session.commit()
    return follow_up


def _cohort_of(session: Session, k: JobKind, job_id: str) -> str | None:
    return session.scalar(sa.select(k.model.cohort_id).where(k.model.id == job_id))


def _cancel_queued_jobs_of(session: Session, cohort_id: str, now: datetime) -> None:
    """Cancel the cohort's jobs nobody has started (shards, a queued evaluation): they can no longer
    run, and a row left `queued` would say otherwise (issue 15: after a broker outage they stayed)."""
    for k in COHORT_KINDS:
        m = k.model
        run_update(session, sa.update(m).where(m.cohort_id == cohort_id, m.status == JobStatus.queued.value)
                   .values(status=JobStatus.cancelled.value, cancel_requested=True, finished_at=now))


def _any_live_job_in(session: Session, cohort_id: str) -> bool:
    return any(session.scalar(sa.select(sa.func.count()).select_from(k.model).where(
        k.model.cohort_id == cohort_id, k.model.status.in_(LIVE_COHORT))) for k in COHORT_KINDS)


def _settle_cancel_request(session: Session, cohort_id: str | None, now: datetime) -> bool:
    """A cohort asked to stop whose last running job just ended: its queued jobs (a report the last
    shard just made) are cancelled, and the cohort too. True when it was."""
    flagged = session.scalar(sa.select(sa.func.count()).select_from(Cohort).where(
        Cohort.id == cohort_id, Cohort.cancel_requested.is_(True), Cohort.status.in_(LIVE_COHORT)))
    if not flagged:
        return False
    _cancel_queued_jobs_of(session, cohort_id, now)
    if _any_live_job_in(session, cohort_id):
        return False
    run_update(session, sa.update(Cohort).where(Cohort.id == cohort_id, Cohort.status.in_(LIVE_COHORT))
               .values(status=JobStatus.cancelled.value, finished_at=now))
    return True


def _finish_cohort_of(session: Session, k: JobKind, job_id: str, status: str, error: str | None) -> None:
    if not k.in_cohort:
        return
    cohort_id = _cohort_of(session, k, job_id)
    # The other jobs before the cohort: rows are locked in the order a claim locks them (its shard,
    # then the cohort), so PostgreSQL has no deadlock to break.
    _cancel_queued_jobs_of(session, cohort_id, utcnow())
    run_update(
        session,
        sa.update(Cohort)
        .where(Cohort.id == cohort_id, Cohort.status.not_in(TERMINAL_STATUSES))
        .values(status=status, error=error, finished_at=utcnow()),
    )


def _finish_unsuccessfully(session: Session, kind: str, job_id: str, worker_id: str | None, cohort_error: str | None,
                           **values) -> bool:
    """Fail or cancel a job (values: its status and what else the row records) and, for a shard or an
    evaluation, its cohort the same way. False when the job was already finished."""
    k = job_kind(kind)
    start_write(session)
    n = run_update(
        session,
        sa.update(k.model).where(*_finish_where(k.model, job_id, worker_id)).values(finished_at=utcnow(), **values),
    )
    if n == 1:
        _finish_cohort_of(session, k, job_id, values["status"], cohort_error)
    session.commit()
    return n == 1


def mark_failed(session: Session, kind: str, job_id: str, error: str, *, worker_id: str | None = None) -> bool:
    """Fail a job with a message (no stack traces: they reach API users). A failed shard or
    evaluation fails its cohort. False when the job was already finished."""
    error = (error or "failed")[:MAX_ERROR_CHARS]
    return _finish_unsuccessfully(session, kind, job_id, worker_id, job_kind(kind).failure_prefix + error,
                                  status=JobStatus.failed.value, error=error)


def mark_cancelled(session: Session, kind: str, job_id: str, *, worker_id: str | None = None) -> bool:
    """Record that a job stopped on request. A cancelled shard or evaluation cancels its cohort."""
    return _finish_unsuccessfully(session, kind, job_id, worker_id, None,
                                  status=JobStatus.cancelled.value, cancel_requested=True)


# --- cancelling a cohort, and whether its jobs still run --------------------------------------------


def request_cancel_cohort(session: Session, cohort_id: str) -> bool:
    """Ask a cohort to stop: its queued shards (and a queued evaluation) are cancelled at once, running
    ones stop at their worker's next batch (is_cancel_requested), and the cohort is cancelled when
    none runs (else by the last one to stop). Asking again while they stop is harmless. False when
    the cohort has finished already (or does not exist): nothing is changed."""
    start_write(session)
    now = utcnow()
    live = sa.and_(Cohort.id == cohort_id, Cohort.status.in_(LIVE_COHORT))
    # Its jobs first, then the cohort: the order a claim locks rows in (see _finish_cohort_of).
    for k in COHORT_KINDS:
        m = k.model
        run_update(session, sa.update(m).where(m.cohort_id == cohort_id, m.status == JobStatus.queued.value,
                                               sa.exists().where(live))
                   .values(status=JobStatus.cancelled.value, cancel_requested=True, finished_at=now))
    if run_update(session, sa.update(Cohort).where(live).values(cancel_requested=True)) != 1:
        session.rollback()
        return False
    # Holding the cohort row now: a report its last shard made in between is visible, and cancelled.
    _settle_cancel_request(session, cohort_id, now)
    session.commit()
    return True


def cohort_in_use(session: Session, cohort_id: str) -> bool:
    """True while the cohort or any of its jobs is queued or running (a worker may still write to it)."""
    live = session.scalar(sa.select(sa.func.count()).select_from(Cohort).where(
        Cohort.id == cohort_id, Cohort.status.in_(LIVE_COHORT)))
    return bool(live) or _any_live_job_in(session, cohort_id)


def cohort_jobs_finished(cohort_id_column) -> list:
    """WHERE conditions: no job of the cohort (by `cohort_id_column`) is queued or running."""
    return [~sa.exists().where(k.model.cohort_id == cohort_id_column, k.model.status.in_(LIVE_COHORT))
            for k in COHORT_KINDS]


# --- the sweep's view -----------------------------------------------------------------------------


class LiveJob(NamedTuple):
    kind: str
    id: str
    status: str
    claimed_by: str | None
    heartbeat_at: datetime | None
    created_at: datetime


def stopping_jobs(session: Session) -> list[LiveJob]:
    """Running jobs asked to stop (their own cancel, or their cohort's): the sweep finishes those whose
    worker died before it could (a claim skips them, so nothing else ever would)."""
    found: list[LiveJob] = []
    for k in JOB_KINDS.values():
        m = k.model
        stmt = sa.select(m.id, m.status, m.claimed_by, m.heartbeat_at, m.created_at).where(
            m.status == JobStatus.running.value)
        if k.in_cohort:
            stmt = stmt.join(Cohort, Cohort.id == m.cohort_id).where(
                sa.or_(m.cancel_requested.is_(True), Cohort.cancel_requested.is_(True),
                       Cohort.status.notin_(LIVE_COHORT)))
        else:
            stmt = stmt.where(m.cancel_requested.is_(True))
        found.extend(LiveJob(k.name, *row) for row in session.execute(stmt.order_by(m.created_at, m.id)))
    return found


def live_jobs(session: Session, *, statuses: list[str], created_before: datetime | None = None) -> list[LiveJob]:
    """Jobs in `statuses` that nobody asked to stop (for shards and reports: their cohort is queued or
    running and not cancelled), optionally only those created before `created_before`. Kinds in the
    registry's order (training, generation, evaluation), oldest first within a kind."""
    found: list[LiveJob] = []
    for k in JOB_KINDS.values():
        m = k.model
        stmt = sa.select(m.id, m.status, m.claimed_by, m.heartbeat_at, m.created_at).where(
            m.status.in_(statuses), m.cancel_requested.is_(False)
        )
        if created_before is not None:
            stmt = stmt.where(m.created_at < created_before)
        if k.in_cohort:
            stmt = stmt.join(Cohort, Cohort.id == m.cohort_id).where(
                Cohort.status.in_(LIVE_COHORT), Cohort.cancel_requested.is_(False)
            )
        found.extend(LiveJob(k.name, *row) for row in session.execute(stmt.order_by(m.created_at, m.id)))
    return found
