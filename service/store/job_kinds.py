"""The job kinds, in one place: for each, the table its rows live in, the Celery task that runs it,
and what its claim and its success write besides the row's own status columns. The state machine
(service/store/lifecycle.py), service/jobs.py (the task of a kind) and worker/ (task -> kind, the
sweep's order) look them up here.

    kind        table          task (args: [row id])  in a cohort  a claim also   success also writes
    "train"     training_jobs  promptehr.train        no           -              model_id; progress done = total
    "generate"  cohort_shards  promptehr.generate     yes          starts the     progress done = count; the
                                                                   cohort         cohort's shards_done + 1 and,
                                                                                  with the last shard, its report
                                                                                  row (queued: an "evaluate" job)
    "evaluate"  reports        promptehr.evaluate     yes          -              the cohort: report_id, succeeded

Rows "in a cohort" take their cancel flag from the cohort, and their failure or cancellation ends it.
A shard is claimable only while its cohort is queued or running and not cancelled, and only a running
shard is counted done (only the worker that ran it counts it). Kinds are listed in the order the
sweep resends jobs: training before generation before evaluation.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from promptehr.service.models import Cohort, CohortShard, Report, TrainingJob
from promptehr.service.models.base import TERMINAL_STATUSES, JobStatus
from promptehr.service.store.base import run_update

LIVE_COHORT = (JobStatus.queued.value, JobStatus.running.value)


class UnknownJobKind(ValueError):
    pass


def _no_conditions() -> list:
    return []


def _nothing(session: Session, job_id: str, now: datetime) -> None:
    return None


@dataclass(frozen=True)
class JobKind:
    name: str
    model: type  # the table of its rows; each has the columns of service.models.base.JobMixin
    task: str  # the Celery task name
    in_cohort: bool  # the rows have a cohort_id (see the module's docstring)
    failure_prefix: str = ""  # put before the job's error when its failure is copied onto the cohort
    result_column: str | None = None  # success sets it to the caller's result id (it must give one)
    claim_where: Callable[[], list] = _no_conditions  # conditions a claim adds to the row's own
    on_claim: Callable[[Session, str, datetime], None] = _nothing  # after a claim, same transaction
    success_where: Callable[[], list] = _no_conditions  # conditions success adds to "not finished"
    # After the row is marked succeeded, same transaction; returns the id of a job to enqueue, or None.
    on_success: Callable[[Session, str, datetime], str | None] = _nothing


# --- what claims and successes write, per kind -----------------------------------------------------


def _train_succeeded(session: Session, job_id: str, now: datetime) -> None:
    row = session.get(TrainingJob, job_id)
    progress = dict(row.progress or {})
    progress["done"] = progress.get("total") or row.epochs
    run_update(session, sa.update(TrainingJob).where(TrainingJob.id == job_id).values(progress=progress))


def _shard_claimable() -> list:
    return [
        sa.exists().where(
            Cohort.id == CohortShard.cohort_id,
            Cohort.status.in_(LIVE_COHORT),
            Cohort.cancel_requested.is_(False),
        )
    ]


def _start_cohort(session: Session, shard_id: str, now: datetime) -> None:
    cohort_id = session.scalar(sa.select(CohortShard.cohort_id).where(CohortShard.id == shard_id))
    run_update(
        session,
        sa.update(Cohort)
        .where(Cohort.id == cohort_id, Cohort.status == JobStatus.queued.value)
        .values(status=JobStatus.running.value, started_at=now),
    )


def _shard_running() -> list:
    return [CohortShard.status == JobStatus.running.value]


def _shard_succeeded(session: Session, shard_id: str, now: datetime) -> str | None:
    """Count the shard done; the call that brings shards_done to n_shards creates the cohort's report
    (reports.cohort_id is unique: a second could not exist) and returns its id."""
    row = session.get(CohortShard, shard_id)
    progress = {"done": row.count, "total": row.count, "unit": "patients"}
    run_update(session, sa.update(CohortShard).where(CohortShard.id == shard_id).values(progress=progress))
    cohort_id = session.scalar(sa.select(CohortShard.cohort_id).where(CohortShard.id == shard_id))
    run_update(session, sa.update(Cohort).where(Cohort.id == cohort_id).values(shards_done=Cohort.shards_done + 1))
    # We hold the cohort row's lock (PostgreSQL) or the write lock (SQLite) until commit.
    done, total, tenant = session.execute(
        sa.select(Cohort.shards_done, Cohort.n_shards, Cohort.tenant).where(Cohort.id == cohort_id)).one()
    if done != total:
        return None
    report = Report(cohort_id=cohort_id, tenant=tenant, status=JobStatus.queued.value, progress={"done": 0, "total": None, "unit": "steps"})
    session.add(report)
    session.flush()
    return report.id


def _report_succeeded(session: Session, report_id: str, now: datetime) -> None:
    cohort_id = session.scalar(sa.select(Report.cohort_id).where(Report.id == report_id))
    run_update(
        session,
        sa.update(Cohort)
        .where(Cohort.id == cohort_id, Cohort.status.not_in(TERMINAL_STATUSES))
        .values(report_id=report_id, status=JobStatus.succeeded.value, finished_at=now),
    )


# --- the registry ---------------------------------------------------------------------------------

JOB_KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind("train", TrainingJob, "promptehr.train", in_cohort=False, result_column="model_id",
                on_success=_train_succeeded),
        JobKind("generate", CohortShard, "promptehr.generate", in_cohort=True, failure_prefix="generation failed: ",
                claim_where=_shard_claimable, on_claim=_start_cohort, success_where=_shard_running,
                on_success=_shard_succeeded),
        JobKind("evaluate", Report, "promptehr.evaluate", in_cohort=True, failure_prefix="evaluation failed: ",
                on_success=_report_succeeded),
    )
}
_BY_TASK = {kind.task: kind for kind in JOB_KINDS.values()}


def job_kind(kind: str) -> JobKind:
    try:
        return JOB_KINDS[kind]
    except KeyError:
        raise UnknownJobKind(f"unknown job kind {kind!r}; expected one of {sorted(JOB_KINDS)}") from None


def task_name(kind: str) -> str:
    """The Celery task that runs jobs of `kind` (UnknownJobKind, a ValueError, for no such kind)."""
    return job_kind(kind).task


def kind_of_task(task: str) -> JobKind | None:
    """The kind a task name runs; None for a task that is not ours."""
    return _BY_TASK.get(task)
