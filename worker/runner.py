"""The embedded job runner: with no CELERY_BROKER_URL, `promptehr serve` runs jobs in its own process.

`make_runner(settings)` returns a LocalRunner, the callable `service.jobs.set_local_runner` expects:
`runner(task_name, job_id)` puts the id on a queue and returns at once; one background thread takes
ids off the queue and runs them one at a time through worker.dispatch.run_task, the same code a
Celery worker runs. Claims work the same way too, so an id queued twice runs once.

At start the runner queues every job left queued, and every job left running by a process that is
gone (a previous `promptehr serve` that was stopped or killed): training resumes from its last
snapshot, generation from the last stored patient; while idle it looks again every few minutes for
running jobs nobody heartbeats. A job that lost the database is tried again (after 1, 2, 4, ... 30 s)
and resumes where it stopped. When the process exits the running job is asked to stop (training
writes a snapshot) and stays `running`, to be resumed by the next start.
"""
from __future__ import annotations

import atexit
import logging
import queue
import threading

from promptehr.service import store
from promptehr.service.settings import Settings, get_settings
from promptehr.worker.claims import orphaned_jobs
from promptehr.worker.context import WorkerContext, make_context, new_worker_id
from promptehr.worker.dispatch import run_task
from promptehr.worker.model_loading import clear_cache
from promptehr.worker.presence import Beacon

log = logging.getLogger(__name__)

_STOP = object()
DB_RETRIES = 6  # after 1, 2, 4, 8, 16 and 30 s: about a minute of database outage


class LocalRunner:
    def __init__(self, ctx: WorkerContext, *, recover: bool = True, sweep_every: float | None = None):
        self.ctx = ctx
        self.sweep_every = sweep_every or max(5.0, min(300.0, ctx.settings.job_stale_after_seconds / 2))
        self._queue: queue.Queue = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0  # queued + running
        self.outcomes: list[tuple[str, str, str]] = []  # (task name, id, outcome), most recent last
        self._thread = threading.Thread(target=self._loop, name="promptehr-jobs", daemon=True)
        self.presence = Beacon(ctx)  # the workers table: what POST /training-jobs checks `devices` against
        if recover:
            self.recover()
        self._thread.start()
        self.presence.start()

    # -- the hook service.jobs calls --------------------------------------------------------------

    def __call__(self, task_name: str, job_id: str) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put((task_name, str(job_id)))

    def recover(self) -> int:
        """Queue the jobs nobody is working on (queued ones, and running ones whose process is gone)."""
        orphans = orphaned_jobs(self.ctx, include_queued=True)
        for kind, job_id in orphans:
            self(store.task_name(kind), job_id)
        if orphans:
            log.info("embedded runner: picked up %d job(s) left from before", len(orphans))
        return len(orphans)

    # -- the thread -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.sweep_every)
            except queue.Empty:
                self._sweep()
                continue
            if item is _STOP:
                return
            task_name, job_id = item
            try:
                if self.ctx.shutdown.is_set():
                    continue  # left queued in the database; the next start picks it up
                outcome = self._run(task_name, job_id)
                self.outcomes.append((task_name, job_id, outcome))
            except Exception:  # run_task records job failures itself; this is a bug, not the job's
                log.exception("embedded runner: %s %s raised", task_name, job_id)
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        clear_cache()
                        self._idle.notify_all()

    def _run(self, task_name: str, job_id: str) -> str:
        """Run one job; when it lost the database, wait and take it up again (it resumes)."""
        released: list[str] = []
        outcome = "retry"
        for attempt in range(DB_RETRIES + 1):
            worker_id = new_worker_id()
            outcome = run_task(task_name, job_id, self.ctx, worker_id=worker_id, released=released)
            if outcome != "retry":
                return outcome
            released.append(worker_id)
            if attempt < DB_RETRIES:
                log.warning("embedded runner: %s %s lost the database; trying again", task_name, job_id)
                if self.ctx.shutdown.wait(min(30.0, 2.0**attempt)):
                    return "stopped"
        return outcome

    def _sweep(self) -> None:
        """Queue running jobs whose worker is gone (stale heartbeat, dead process)."""
        try:
            for kind, job_id in orphaned_jobs(self.ctx, include_queued=False):
                self(store.task_name(kind), job_id)
        except Exception:
            log.exception("embedded runner: sweep for orphaned jobs failed")

    # -- control ----------------------------------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float | None = 30) -> None:
        """Ask the running job to stop (it stays resumable) and end the thread."""
        self.ctx.shutdown.set()
        self._queue.put(_STOP)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        self.presence.stop()
        self.ctx.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def make_runner(settings: Settings | None = None, *, recover: bool = True) -> LocalRunner:
    """The runner for `promptehr serve`; stopped (its job left resumable) when the process exits."""
    runner = LocalRunner(make_context(settings or get_settings()), recover=recover)
    atexit.register(runner.stop)
    return runner
