"""One job's life, the same under Celery and under the embedded runner:

claim the row (or do nothing) -> hold a Lease while the body works -> record how it ended.

A body returns when it has finished its job (it calls the store's mark_succeeded itself, since
what success writes differs per kind) and raises `Stopped` when `lease.should_stop()` told it to.
How a job ends:
- the body returns: nothing more to do;
- `Stopped` because the user cancelled: mark_cancelled;
- `Stopped` because the claim was lost (another worker took over) or the process is shutting down:
  nothing is written; the row stays running and is resumed by whoever claims it next;
- the database went away (connection refused or dropped): nothing can be written, and the job is not
  at fault, so it is not failed: "retry" is returned, the row stays running, and the job is resumed
  (the embedded runner tries again itself; under Celery the child exits and the sweep resends the
  job of a claimant that is gone);
- bad data (DataError), a checkpoint that fails its manifest (CheckpointError) or any other error:
  mark_failed with a one-line reason (a DataError names the file). Never re-raised: a broken job
  must not take the worker process down with it. Paths under the data root are written relative to
  it, as the user registered the dataset: a stored error never shows the server's folders.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sqlalchemy import exc as sa_exc

from model.errors import CheckpointError, DataError
from service import store
from service.data_paths import relative_to_data_root
from worker.claims import MAX_ATTEMPTS, Lease, claim
from worker.context import WorkerContext, new_worker_id

log = logging.getLogger(__name__)


class Stopped(Exception):
    """Raised by a body that noticed lease.should_stop()."""


Body = Callable[[WorkerContext, Lease], None]


def _reason(e: BaseException) -> str:
    if isinstance(e, (DataError, CheckpointError)):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of memory"
    text = str(e).strip().replace("\n", " ")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def is_database_outage(e: BaseException) -> bool:
    """The database could not be reached or dropped the connection (not a problem of the job's)."""
    if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
        return True
    return isinstance(e, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError))


def run_job(ctx: WorkerContext, kind: str, job_id: str, body: Body, *, worker_id: str | None = None,
            released: Iterable[str] = ()) -> str:
    """Run `body` on job `job_id` if this process can claim it. Returns what happened:
    "skipped" (not claimed), "succeeded", "cancelled", "failed", "stopped" (left to be resumed) or
    "retry" (the database went away; left running, to be resumed). `worker_id`: the claimant id to
    use (new by default); `released`: earlier claimant ids of this caller that may be taken over."""
    worker_id = worker_id or new_worker_id()
    try:
        if not claim(ctx, kind, job_id, worker_id, released=released):
            log.info("%s %s: not claimed (running elsewhere, finished, cancelled or unknown)", kind, job_id)
            return "skipped"
        with ctx.session() as session:
            attempt = store.get_job(session, kind, job_id).attempt
            if attempt > MAX_ATTEMPTS:
                store.mark_failed(
                    session, kind, job_id,
                    f"gave up after {attempt - 1} attempts: each ended without finishing "
                    "(the worker process died or lost the database)",
                    worker_id=worker_id,
                )
                return "failed"
    except Exception as e:
        if is_database_outage(e):
            log.warning("%s %s: database unreachable while claiming (%s)", kind, job_id, type(e).__name__)
            return "retry"
        log.exception("%s %s: could not claim", kind, job_id)
        return "skipped"

    log.info("%s %s: claimed by %s (attempt %d)", kind, job_id, worker_id, attempt)
    with Lease(ctx, kind, job_id, worker_id) as lease:
        try:
            body(ctx, lease)
            return "succeeded"
        except Stopped:
            return _stopped(ctx, kind, job_id, worker_id, lease)
        except Exception as e:
            if lease.cancelled.is_set():
                return _stopped(ctx, kind, job_id, worker_id, lease)
            if is_database_outage(e):
                log.warning("%s %s: lost the database (%s); left running, to be resumed", kind, job_id,
                            type(e).__name__)
                return "retry"
            if isinstance(e, (DataError, CheckpointError)):
                log.warning("%s %s failed: %s", kind, job_id, e)
            else:
                log.exception("%s %s failed", kind, job_id)
            try:
                with ctx.session() as session:
                    store.mark_failed(session, kind, job_id, relative_to_data_root(_reason(e), ctx.data_root),
                                      worker_id=worker_id)
            except Exception:
                log.exception("%s %s: could not record the failure", kind, job_id)
            return "failed"


def _stopped(ctx: WorkerContext, kind: str, job_id: str, worker_id: str, lease: Lease) -> str:
    if lease.cancelled.is_set():
        with ctx.session() as session:
            store.mark_cancelled(session, kind, job_id, worker_id=worker_id)
        log.info("%s %s: cancelled", kind, job_id)
        return "cancelled"
    log.info("%s %s: stopped (%s); left for the next claimant", kind, job_id,
             "claim lost" if lease.lost.is_set() else "shutting down")
    return "stopped"
