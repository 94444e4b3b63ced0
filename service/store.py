"""Data access shared by the API and the worker. Every function takes a Session; every function that
changes something commits before it returns (so a worker's progress is visible at once).

Jobs. Three kinds of row are jobs, each with the columns of `JobMixin`:

    kind        table            what the worker does with it        message (task name, args)
    "train"     training_jobs    train a model, then create_model()  promptehr.train    [job_id]
    "generate"  cohort_shards    generate one shard of a cohort      promptehr.generate [shard_id]
    "evaluate"  reports          evaluate a cohort, save_report()    promptehr.evaluate [report_id]

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
whose worker died (no heartbeat for `stale_after`) is taken over. A shard is claimable only while its
cohort is queued or running and not cancelled.

Shards. `mark_succeeded("generate", shard_id)` flips the shard running -> succeeded (a conditional
UPDATE, so only once) and, in the same transaction, increments cohorts.shards_done (the row lock on
PostgreSQL / the single writer on SQLite serialise the increments). The one call that brings
shards_done to n_shards creates the cohort's report row (queued; reports.cohort_id is unique, a second
one could not exist) and returns its id: that caller enqueues "evaluate". `mark_succeeded("evaluate")`
sets the cohort's report_id and marks the cohort succeeded.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, defer

from service.models import (
    ApiKey,
    Cohort,
    CohortPatient,
    CohortShard,
    Dataset,
    Model,
    Report,
    TrainingJob,
)
from service.models.base import TERMINAL_STATUSES, JobStatus, UTCDateTime, utcnow

JOB_KINDS: dict[str, type] = {"train": TrainingJob, "generate": CohortShard, "evaluate": Report}
DEFAULT_STALE_AFTER = timedelta(minutes=10)
MAX_ERROR_CHARS = 4000


class UnknownJobKind(ValueError):
    pass


def _job_model(kind: str):
    try:
        return JOB_KINDS[kind]
    except KeyError:
        raise UnknownJobKind(f"unknown job kind {kind!r}; expected one of {sorted(JOB_KINDS)}") from None


def _update(session: Session, stmt) -> int:
    """Run an UPDATE through the session; returns its row count. Loaded objects are expired (they
    reload on next access, as after a commit)."""
    result = session.execute(stmt, execution_options={"synchronize_session": False})
    session.expire_all()
    return result.rowcount


def _start_write(session: Session) -> None:
    """On SQLite, end the caller's open transaction so that the one that follows begins with a write.

    On SQLite (WAL) a transaction that reads first and writes later fails at once with "database is
    locked" when another connection wrote in between; one that begins with its write waits for the
    lock (busy timeout) instead. PostgreSQL has no such problem (row locks, and each statement of a
    READ COMMITTED transaction sees what was committed before it began), so there the caller's reads
    and the write share one transaction: a request that checks a row and then writes costs one
    connection check-out and one COMMIT instead of two (POST /cohorts: see docs/performance.md)."""
    if session.get_bind().dialect.name == "sqlite":
        session.commit()


def _now_literal(now: datetime):
    return sa.literal(now, UTCDateTime())


# --- pages --------------------------------------------------------------------------------------


def _page(session: Session, model, *, limit: int, after: tuple[datetime, str] | None, where=()) -> list:
    """Rows ordered by (created_at, id), those after the cursor `after`."""
    stmt = sa.select(model).where(*where).order_by(model.created_at, model.id).limit(limit)
    if after is not None:
        at, last_id = after
        stmt = stmt.where(
            sa.or_(model.created_at > at, sa.and_(model.created_at == at, model.id > last_id))
        )
    return list(session.scalars(stmt))


# --- API keys -------------------------------------------------------------------------------------


def create_api_key(session: Session, *, name: str, key_hash: str, prefix: str) -> ApiKey:
    _start_write(session)
    key = ApiKey(name=name, key_hash=key_hash, prefix=prefix)
    session.add(key)
    session.commit()
    return key


def get_api_key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalar(sa.select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))


# --- datasets -------------------------------------------------------------------------------------


def create_dataset(session: Session, *, name: str, format: str, path: str, stats: dict[str, Any]) -> Dataset:
    _start_write(session)
    dataset = Dataset(name=name, format=format, path=path, stats=stats)
    session.add(dataset)
    session.commit()
    return dataset


def get_dataset(session: Session, dataset_id: str) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def list_datasets(session: Session, *, limit: int, after: tuple[datetime, str] | None = None) -> list[Dataset]:
    return _page(session, Dataset, limit=limit, after=after)


# --- training jobs --------------------------------------------------------------------------------


def create_training_job(
    session: Session,
    *,
    dataset_id: str,
    preset: str,
    mode: str,
    epochs: int,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> TrainingJob:
    _start_write(session)
    job = TrainingJob(
        dataset_id=dataset_id,
        preset=preset,
        mode=mode,
        epochs=epochs,
        seed=seed,
        options=options or {},
        status=JobStatus.queued.value,
        progress={"done": 0, "total": epochs, "unit": "epochs"},
    )
    session.add(job)
    session.commit()
    return job


def get_training_job(session: Session, job_id: str) -> TrainingJob | None:
    return session.get(TrainingJob, job_id)


def list_training_jobs(
    session: Session, *, limit: int, after: tuple[datetime, str] | None = None
) -> list[TrainingJob]:
    return _page(session, TrainingJob, limit=limit, after=after)


def request_cancel_training_job(session: Session, job_id: str) -> TrainingJob | None:
    """Ask a training job to stop. A queued job is cancelled at once; a running one gets
    cancel_requested and its worker stops at its next check. Finished jobs are left as they are."""
    _start_write(session)
    now = utcnow()
    _update(
        session,
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == JobStatus.queued.value)
        .values(status=JobStatus.cancelled.value, cancel_requested=True, finished_at=now),
    )
    _update(
        session,
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == JobStatus.running.value)
        .values(cancel_requested=True),
    )
    session.commit()
    return session.get(TrainingJob, job_id)


# --- models ---------------------------------------------------------------------------------------


def create_model(
    session: Session,
    *,
    name: str,
    dataset_id: str,
    checkpoint_path: str,
    manifest_sha256: str,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    training_job_id: str | None = None,
) -> Model:
    _start_write(session)
    model = Model(
        name=name,
        dataset_id=dataset_id,
        training_job_id=training_job_id,
        checkpoint_path=checkpoint_path,
        manifest_sha256=manifest_sha256,
        config=config or {},
        metrics=metrics or {},
    )
    session.add(model)
    session.commit()
    return model


def get_model(session: Session, model_id: str) -> Model | None:
    return session.get(Model, model_id)


def list_models(session: Session, *, limit: int, after: tuple[datetime, str] | None = None) -> list[Model]:
    return _page(session, Model, limit=limit, after=after)


# --- cohorts --------------------------------------------------------------------------------------


def create_cohort(
    session: Session, *, model_id: str, n_patients: int, seed: int, spec: dict[str, Any], shard_size: int
) -> tuple[Cohort, list[CohortShard]]:
    """A queued cohort and its queued shards (each shard is a "generate" job)."""
    _start_write(session)
    n_shards = max(1, math.ceil(n_patients / shard_size))
    cohort = Cohort(
        model_id=model_id,
        n_patients=n_patients,
        seed=seed,
        spec=spec,
        shard_size=shard_size,
        n_shards=n_shards,
        shards_done=0,
        status=JobStatus.queued.value,
        progress={"done": 0, "total": n_patients, "unit": "patients"},
    )
    session.add(cohort)
    session.flush()
    shards = []
    for i in range(n_shards):
        start = i * shard_size
        count = min(shard_size, n_patients - start)
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
    session.add_all(shards)
    session.commit()
    return cohort, shards


def get_cohort(session: Session, cohort_id: str) -> Cohort | None:
    return session.get(Cohort, cohort_id)


def list_cohorts(session: Session, *, limit: int, after: tuple[datetime, str] | None = None) -> list[Cohort]:
    return _page(session, Cohort, limit=limit, after=after)


def get_shard(session: Session, shard_id: str) -> CohortShard | None:
    return session.get(CohortShard, shard_id)


def list_shards(session: Session, cohort_id: str) -> list[CohortShard]:
    return list(
        session.scalars(
            sa.select(CohortShard).where(CohortShard.cohort_id == cohort_id).order_by(CohortShard.shard_index)
        )
    )


def cohort_progress(session: Session, cohort: Cohort) -> dict[str, Any]:
    """{"done": patients stored, "total": n_patients, "unit": "patients"}."""
    return {"done": count_patients(session, cohort.id), "total": cohort.n_patients, "unit": "patients"}


# --- cohort patients ------------------------------------------------------------------------------


def _insert_ignoring_conflicts(session: Session, table: sa.Table, index_elements: list[str]):
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two supported dialects
        raise NotImplementedError(f"insert ... on conflict do nothing on {dialect}")
    return insert(table).on_conflict_do_nothing(index_elements=index_elements)


def insert_patients(
    session: Session, cohort_id: str, start_index: int, patients: Sequence[dict[str, Any]]
) -> None:
    """Store patients at indices start_index, start_index+1, ... Rows whose (cohort_id, index) exists
    already are left alone, so a redelivered shard cannot duplicate patients."""
    if not patients:
        return
    rows = [{"cohort_id": cohort_id, "index": start_index + i, "patient": p} for i, p in enumerate(patients)]
    _start_write(session)
    stmt = _insert_ignoring_conflicts(session, CohortPatient.__table__, ["cohort_id", "index"])
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


def count_patients(session: Session, cohort_id: str) -> int:
    return session.scalar(
        sa.select(sa.func.count()).select_from(CohortPatient).where(CohortPatient.cohort_id == cohort_id)
    )


# --- reports --------------------------------------------------------------------------------------


def get_report(session: Session, report_id: str, *, with_html: bool = True) -> Report | None:
    """The report; with_html=False leaves its HTML page (about 30 times the size of its JSON) unread
    until it is used."""
    options = () if with_html else (defer(Report.html),)
    return session.get(Report, report_id, options=options)


def save_report(session: Session, report_id: str, *, content: dict[str, Any], html: str) -> None:
    """Store the evaluation's JSON and HTML; then call mark_succeeded("evaluate", report_id)."""
    _start_write(session)
    _update(session, sa.update(Report).where(Report.id == report_id).values(content=content, html=html))
    session.commit()


# --- jobs -----------------------------------------------------------------------------------------


def claim_job(
    session: Session, kind: str, job_id: str, worker_id: str, *, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> bool:
    """Atomically take a job: queued -> running, or take over a running job whose heartbeat is older
    than `stale_after`. True for exactly one of several concurrent callers; False when the job is
    taken, finished, cancelled or does not exist (then the message is acked and dropped)."""
    m = _job_model(kind)
    _start_write(session)
    now = utcnow()
    claimable = sa.or_(
        m.status == JobStatus.queued.value,
        sa.and_(
            m.status == JobStatus.running.value,
            sa.or_(m.heartbeat_at.is_(None), m.heartbeat_at < now - stale_after),
        ),
    )
    where = [m.id == job_id, m.cancel_requested.is_(False), claimable]
    if kind == "generate":
        where.append(
            sa.exists().where(
                Cohort.id == CohortShard.cohort_id,
                Cohort.status.in_([JobStatus.queued.value, JobStatus.running.value]),
                Cohort.cancel_requested.is_(False),
            )
        )
    stmt = (
        sa.update(m)
        .where(*where)
        .values(
            status=JobStatus.running.value,
            claimed_by=worker_id,
            heartbeat_at=now,
            attempt=m.attempt + 1,
            started_at=sa.func.coalesce(m.started_at, _now_literal(now)),
        )
    )
    if _update(session, stmt) != 1:
        session.rollback()
        return False
    if kind == "generate":
        cohort_id = session.scalar(sa.select(CohortShard.cohort_id).where(CohortShard.id == job_id))
        _update(
            session,
            sa.update(Cohort)
            .where(Cohort.id == cohort_id, Cohort.status == JobStatus.queued.value)
            .values(status=JobStatus.running.value, started_at=now),
        )
    session.commit()
    return True


def heartbeat(session: Session, kind: str, job_id: str, worker_id: str) -> bool:
    """Refresh the claim. False when this worker no longer holds the job (it should stop)."""
    m = _job_model(kind)
    _start_write(session)
    n = _update(
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
    m = _job_model(kind)
    _start_write(session)
    where = [m.id == job_id, m.status == JobStatus.running.value]
    if worker_id is not None:
        where.append(m.claimed_by == worker_id)
    if _update(session, sa.update(m).where(*where).values(heartbeat_at=utcnow())) != 1:
        session.rollback()
        return False
    old = session.scalar(sa.select(m.progress).where(m.id == job_id)) or {}
    progress = {
        "done": done,
        "total": total if total is not None else old.get("total"),
        "unit": unit if unit is not None else old.get("unit"),
    }
    _update(session, sa.update(m).where(m.id == job_id).values(progress=progress))
    session.commit()
    return True


def is_cancel_requested(session: Session, kind: str, job_id: str) -> bool:
    """True when the job (for shards and reports: their cohort) was asked to stop, or is gone."""
    m = _job_model(kind)
    if kind == "train":
        stmt = sa.select(m.cancel_requested).where(m.id == job_id)
    else:
        stmt = sa.select(Cohort.cancel_requested).join(m, m.cohort_id == Cohort.id).where(m.id == job_id)
    value = session.scalar(stmt)
    session.commit()  # end the read transaction: the next check must see fresh data
    return True if value is None else bool(value)


def _finish_where(m, job_id: str, worker_id: str | None):
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
    m = _job_model(kind)
    if kind == "train" and model_id is None:
        raise ValueError("mark_succeeded('train', ...) needs model_id")
    _start_write(session)
    now = utcnow()
    values: dict[str, Any] = {"status": JobStatus.succeeded.value, "finished_at": now, "error": None}
    if kind == "train":
        values["model_id"] = model_id
    where = _finish_where(m, job_id, worker_id)
    if kind == "generate":
        where.append(m.status == JobStatus.running.value)  # only the worker that ran it counts it
    if _update(session, sa.update(m).where(*where).values(**values)) != 1:
        session.rollback()
        return None
    row = session.get(m, job_id)
    if kind == "train":
        progress = dict(row.progress or {})
        progress["done"] = progress.get("total") or row.epochs
        _update(session, sa.update(m).where(m.id == job_id).values(progress=progress))
    elif kind == "generate":
        progress = {"done": row.count, "total": row.count, "unit": "patients"}
        _update(session, sa.update(m).where(m.id == job_id).values(progress=progress))

    report_id = None
    if kind == "generate":
        cohort_id = session.scalar(sa.select(CohortShard.cohort_id).where(CohortShard.id == job_id))
        _update(session, sa.update(Cohort).where(Cohort.id == cohort_id).values(shards_done=Cohort.shards_done + 1))
        # We hold the cohort row's lock (PostgreSQL) or the write lock (SQLite) until commit.
        done, total = session.execute(
            sa.select(Cohort.shards_done, Cohort.n_shards).where(Cohort.id == cohort_id)
        ).one()
        if done == total:
            report = Report(
                cohort_id=cohort_id,
                status=JobStatus.queued.value,
                progress={"done": 0, "total": None, "unit": "steps"},
            )
            session.add(report)
            session.flush()
            report_id = report.id
    elif kind == "evaluate":
        cohort_id = session.scalar(sa.select(Report.cohort_id).where(Report.id == job_id))
        _update(
            session,
            sa.update(Cohort)
            .where(Cohort.id == cohort_id, Cohort.status.not_in(TERMINAL_STATUSES))
            .values(report_id=job_id, status=JobStatus.succeeded.value, finished_at=now),
        )
    session.commit()
    return report_id


def _finish_cohort_of(session: Session, kind: str, job_id: str, status: str, error: str | None) -> None:
    if kind == "train":
        return
    m = _job_model(kind)
    cohort_id = session.scalar(sa.select(m.cohort_id).where(m.id == job_id))
    _update(
        session,
        sa.update(Cohort)
        .where(Cohort.id == cohort_id, Cohort.status.not_in(TERMINAL_STATUSES))
        .values(status=status, error=error, finished_at=utcnow()),
    )


def mark_failed(session: Session, kind: str, job_id: str, error: str, *, worker_id: str | None = None) -> bool:
    """Fail a job with a message (no stack traces: they reach API users). A failed shard or
    evaluation fails its cohort. False when the job was already finished."""
    m = _job_model(kind)
    error = (error or "failed")[:MAX_ERROR_CHARS]
    _start_write(session)
    n = _update(
        session,
        sa.update(m)
        .where(*_finish_where(m, job_id, worker_id))
        .values(status=JobStatus.failed.value, error=error, finished_at=utcnow()),
    )
    if n == 1:
        prefix = {"generate": "generation failed: ", "evaluate": "evaluation failed: "}.get(kind, "")
        _finish_cohort_of(session, kind, job_id, JobStatus.failed.value, prefix + error)
    session.commit()
    return n == 1


def mark_cancelled(session: Session, kind: str, job_id: str, *, worker_id: str | None = None) -> bool:
    """Record that a job stopped on request. A cancelled shard or evaluation cancels its cohort."""
    m = _job_model(kind)
    _start_write(session)
    n = _update(
        session,
        sa.update(m)
        .where(*_finish_where(m, job_id, worker_id))
        .values(status=JobStatus.cancelled.value, cancel_requested=True, finished_at=utcnow()),
    )
    if n == 1:
        _finish_cohort_of(session, kind, job_id, JobStatus.cancelled.value, None)
    session.commit()
    return n == 1


def queued_job_ids(session: Session, kind: str, ids: Iterable[str] | None = None) -> list[str]:
    """Ids of jobs of `kind` still queued (for re-enqueueing after a restart of the embedded runner)."""
    m = _job_model(kind)
    stmt = sa.select(m.id).where(m.status == JobStatus.queued.value).order_by(m.created_at)
    if ids is not None:
        stmt = stmt.where(m.id.in_(list(ids)))
    return list(session.scalars(stmt))

