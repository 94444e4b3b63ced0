"""Claiming a job row and holding it: the lease a task keeps while it works.

`claim(ctx, kind, job_id)` takes a job through `service.store.claim_job`: queued jobs, and running
jobs whose heartbeat is older than settings.job_stale_after_seconds (the worker died somewhere).
It also takes over at once a running job whose claimant was a process on this host that no longer
exists (a Celery child killed by the OOM killer, an embedded server that was restarted): that take-over
is a compare-and-set on the heartbeat the dead process left, done by the same store call with
`stale_after` just under that heartbeat's age, so of several processes trying it exactly one wins.

`Lease` keeps the claim alive from a thread of its own (heartbeat), watches for a cancel request,
and throttles progress writes. `should_stop()` is what training and generation poll.

`orphaned_jobs` / `queued_jobs` are the sweep's lists: the store reads the candidates
(`service.store.live_jobs`); which running ones are orphaned is decided here, since only this host
can tell that a process on it is gone.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from promptehr.service import store
from promptehr.service.models.base import JobStatus, utcnow
from promptehr.worker.context import WorkerContext, new_worker_id, process_start_ticks

log = logging.getLogger(__name__)

# A job whose worker died this many times in a row is failed instead of being tried again.
MAX_ATTEMPTS = 3


def claimant_is_dead(claimed_by: str | None) -> bool:
    """True when `claimed_by` names a process on this host that no longer runs (or whose pid now
    belongs to another process)."""
    if not claimed_by:
        return False
    parts = claimed_by.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    started = parts[2].split(".", 1)[0]
    if pid == os.getpid() and started == process_start_ticks(pid):
        return False  # this very process: another thread of ours holds the job
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    now_started = process_start_ticks(pid)
    if started and now_started and started != now_started:
        return True  # the pid was reused by another process
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def _stale_after(ctx: WorkerContext) -> timedelta:
    return timedelta(seconds=ctx.settings.job_stale_after_seconds)


def claim(ctx: WorkerContext, kind: str, job_id: str, worker_id: str, *, released: Iterable[str] = ()) -> bool:
    """Take job `job_id`; False when it is someone else's (alive), finished, cancelled or unknown.
    `released`: claimant ids known to have stopped working on it (this process's earlier attempt that
    lost the database), taken over like dead ones."""
    with ctx.session() as session:
        if store.claim_job(session, kind, job_id, worker_id, stale_after=_stale_after(ctx)):
            return True
        row = store.get_job(session, kind, job_id)
        if row is None or row.status != JobStatus.running.value or row.heartbeat_at is None:
            return False
        if row.claimed_by not in set(released) and not claimant_is_dead(row.claimed_by):
            return False
        # Compare-and-set on the dead claimant's last heartbeat: claimable only while heartbeat_at is
        # still (within a millisecond) what we just read; anyone who claims first moves it to now.
        age = utcnow() - row.heartbeat_at - timedelta(milliseconds=1)
        log.warning("%s %s: its claimant %s is gone; taking it over", kind, job_id, row.claimed_by)
        return store.claim_job(session, kind, job_id, worker_id, stale_after=max(age, timedelta(0)))


class Lease:
    """A claimed job: heartbeat thread, cancel watch, throttled progress. Use as a context manager."""

    def __init__(self, ctx: WorkerContext, kind: str, job_id: str, worker_id: str, *,
                 progress_every: float = 1.0, poll_every: float = 1.0):
        self.ctx, self.kind, self.job_id, self.worker_id = ctx, kind, job_id, worker_id
        self.progress_every = progress_every
        self.poll_every = poll_every
        self.heartbeat_every = max(0.5, min(30.0, ctx.settings.job_stale_after_seconds / 4))
        self.cancelled = threading.Event()  # the user asked to stop
        self.lost = threading.Event()  # someone else holds the job now, or it was finished elsewhere
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_progress = 0.0
        self._pending: tuple | None = None

    # -- the thread ------------------------------------------------------------------------------

    def __enter__(self) -> Lease:
        self._thread = threading.Thread(target=self._watch, name=f"lease-{self.kind}-{self.job_id[:8]}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        last_beat = time.monotonic()
        while not self._done.wait(self.poll_every):
            try:
                with self.ctx.session() as session:
                    if store.is_cancel_requested(session, self.kind, self.job_id):
                        self.cancelled.set()
                    if time.monotonic() - last_beat >= self.heartbeat_every:
                        if not store.heartbeat(session, self.kind, self.job_id, self.worker_id):
                            self.lost.set()
                        last_beat = time.monotonic()
            except Exception:  # a database hiccup must not kill the job; the next tick tries again
                log.exception("lease check of %s %s failed", self.kind, self.job_id)

    # -- what tasks call ----------------------------------------------------------------------------

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.lost.is_set() or self.ctx.shutdown.is_set()

    def progress(self, done: float, total: float | None = None, unit: str | None = None,
                 *, force: bool = False) -> None:
        """Write progress to the row, at most once per `progress_every` seconds unless forced."""
        now = time.monotonic()
        if not force and now - self._last_progress < self.progress_every:
            self._pending = (done, total, unit)
            return
        self._last_progress = now
        self._pending = None
        with self.ctx.session() as session:
            if not store.update_progress(session, self.kind, self.job_id, done, total, unit, worker_id=self.worker_id):
                self.lost.set()

    def flush_progress(self) -> None:
        if self._pending is not None:
            self.progress(*self._pending, force=True)


def orphaned_jobs(ctx: WorkerContext, *, include_queued: bool) -> list[tuple[str, str]]:
    """(kind, id) of jobs nobody is working on: running with a stale heartbeat or a dead claimant on
    this host, and (include_queued) queued ones. Oldest first, training before generation before
    evaluation. Sending them again is safe: a claim decides who runs a job."""
    stale_before = utcnow() - _stale_after(ctx)
    statuses = [JobStatus.running.value] + ([JobStatus.queued.value] if include_queued else [])
    with ctx.session() as session:
        jobs = store.live_jobs(session, statuses=statuses)
    return [
        (job.kind, job.id) for job in jobs
        if job.status == JobStatus.queued.value or job.heartbeat_at is None or job.heartbeat_at < stale_before
        or claimant_is_dead(job.claimed_by)
    ]


def abandoned_stops(ctx: WorkerContext) -> list[tuple[str, str, str | None]]:
    """(kind, id, claimant) of running jobs asked to stop whose worker is gone (stale heartbeat or dead
    claimant): nobody else will mark them cancelled or remove their scratch."""
    stale_before = utcnow() - _stale_after(ctx)
    with ctx.session() as session:
        jobs = store.stopping_jobs(session)
    return [(job.kind, job.id, job.claimed_by) for job in jobs
            if job.heartbeat_at is None or job.heartbeat_at < stale_before or claimant_is_dead(job.claimed_by)]


def queued_jobs(ctx: WorkerContext, *, created_before: datetime) -> list[tuple[str, str]]:
    """(kind, id) of jobs still queued that were created before `created_before` (their message should
    have been taken long ago), in the order of orphaned_jobs."""
    with ctx.session() as session:
        jobs = store.live_jobs(session, statuses=[JobStatus.queued.value], created_before=created_before)
    return [(job.kind, job.id) for job in jobs]


__all__ = ["MAX_ATTEMPTS", "Lease", "abandoned_stops", "claim", "claimant_is_dead", "new_worker_id", "orphaned_jobs",
           "queued_jobs"]
