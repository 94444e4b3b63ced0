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
  it, as the user registered the dataset: a stored error never shows the server's folders;
- the job ran past its kind's time limit (settings.<kind>_time_limit_seconds, per attempt):
  should_stop() says so, and the job is marked failed with that reason.
A body that does not stop within settings.job_stop_grace_seconds of a cancel or of its time limit
(stuck in a read, a loop that never polls) has its row finished for it by the lease's watchdog:
the job never stays "running" with fresh heartbeats while ignoring a cancel. (The stuck thread
itself cannot be killed from inside; under Celery the hard time limit ends the child.)
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Self

from sqlalchemy import exc as sa_exc

from promptehr.model.errors import CheckpointError, DataError
from promptehr.service import store
from promptehr.service.data_paths import relative_to_data_root
from promptehr.worker.claims import MAX_ATTEMPTS, Lease, claim
from promptehr.worker.context import WorkerContext, new_worker_id

log = logging.getLogger(__name__)


class Stopped(Exception):
    """Raised by a body that noticed lease.should_stop()."""


# kind -> the setting holding its time limit (seconds per attempt).
TIME_LIMIT_SETTINGS = {"train": "train_time_limit_seconds", "generate": "generate_time_limit_seconds",
                       "evaluate": "evaluate_time_limit_seconds"}


def time_limit(settings, kind: str) -> float | None:
    name = TIME_LIMIT_SETTINGS.get(kind)
    return None if name is None else getattr(settings, name)


def time_limit_reason(kind: str, limit: float) -> str:
    return (f"ran longer than the time limit of {limit:g} s of a {kind} job "
            f"(PROMPTEHR_{TIME_LIMIT_SETTINGS[kind].upper()})")


class TimedLease(Lease):
    """A Lease that also says stop once the job has run `limit` seconds (`timed_out`), with a
    watchdog thread that finishes the row itself (cancelled, or failed for the time limit) when the
    body has not stopped `grace` seconds after being told to."""

    def __init__(self, ctx: WorkerContext, kind: str, job_id: str, worker_id: str, *, limit: float | None,
                 grace: float):
        super().__init__(ctx, kind, job_id, worker_id)
        self.limit, self.grace = limit, grace
        self.started = time.monotonic()
        self.timed_out = threading.Event()
        self._body_done = threading.Event()
        self._watchdog: threading.Thread | None = None

    def _check_deadline(self) -> bool:
        if self.limit is not None and time.monotonic() - self.started > self.limit:
            self.timed_out.set()
        return self.timed_out.is_set()

    def should_stop(self) -> bool:
        return self._check_deadline() or super().should_stop()

    def __enter__(self) -> Self:
        super().__enter__()
        self._watchdog = threading.Thread(target=self._watch_body, name=f"watchdog-{self.kind}-{self.job_id[:8]}",
                                          daemon=True)
        self._watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self._body_done.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=10)
        super().__exit__(*exc)

    def _watch_body(self) -> None:
        told_at = None
        while not self._body_done.wait(self.poll_every):
            if not (self._check_deadline() or self.cancelled.is_set()):
                continue
            told_at = told_at or time.monotonic()
            if time.monotonic() - told_at >= self.grace:
                try:
                    self._finish_for_body()
                except Exception:  # the next tick tries again
                    log.exception("%s %s: could not finish the row of a stuck job", self.kind, self.job_id)
                    continue
                return

    def _finish_for_body(self) -> None:
        with self.ctx.session() as session:
            if self.cancelled.is_set():
                done = store.mark_cancelled(session, self.kind, self.job_id, worker_id=self.worker_id)
            else:
                reason = f"{time_limit_reason(self.kind, self.limit)}; it did not stop within {self.grace:g} s"
                done = store.mark_failed(session, self.kind, self.job_id, reason, worker_id=self.worker_id)
        if done:
            log.warning("%s %s did not stop within %g s of being told to; its row is finished for it",
                        self.kind, self.job_id, self.grace)


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
    lease = TimedLease(ctx, kind, job_id, worker_id, limit=time_limit(ctx.settings, kind),
                       grace=ctx.settings.job_stop_grace_seconds)
    with lease:
        try:
            body(ctx, lease)
            return "succeeded"
        except Stopped:
            return _stopped(ctx, kind, job_id, worker_id, lease)
        except Exception as e:
            # Celery's soft time limit raises its own exception in the body: the time limit's reason
            # is the one to record.
            if lease.cancelled.is_set() or lease.timed_out.is_set():
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


def _stopped(ctx: WorkerContext, kind: str, job_id: str, worker_id: str, lease: TimedLease) -> str:
    if lease.cancelled.is_set():
        with ctx.session() as session:
            store.mark_cancelled(session, kind, job_id, worker_id=worker_id)
        log.info("%s %s: cancelled", kind, job_id)
        return "cancelled"
    if lease.timed_out.is_set():
        with ctx.session() as session:
            store.mark_failed(session, kind, job_id, time_limit_reason(kind, lease.limit), worker_id=worker_id)
        log.warning("%s %s: failed, past its time limit of %g s", kind, job_id, lease.limit)
        return "failed"
    log.info("%s %s: stopped (%s); left for the next claimant", kind, job_id,
             "claim lost" if lease.lost.is_set() else "shutting down")
    return "stopped"
