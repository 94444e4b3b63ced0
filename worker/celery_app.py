"""The Celery app of the GPU workers: `app` (what `celery -A worker.celery_app` finds).

Importing this module connects to nothing and reads no settings: the configuration is a promise that
Celery evaluates the first time it needs it (broker = settings.celery_broker_url).

Delivery guarantees (DESIGN section 8). A message carries only a job id; the job row decides who
runs it (worker.claims), so a message delivered twice is harmless and one lost is recovered:
- task_acks_late: the message is acknowledged after the task returns, so a worker that dies
  mid-job leaves it unacknowledged and the broker hands it out again;
- task_reject_on_worker_lost: when the pool child running a job is killed (OOM killer, SIGKILL,
  a CUDA crash) the master requeues the message at once instead of acking it; the next child
  claims the row by seeing that its claimant process is gone and resumes from the last snapshot;
  a job whose worker died MAX_ATTEMPTS times is failed rather than retried forever;
- worker_prefetch_multiplier=1 with concurrency 1: a worker holds one job's message, never a
  backlog that another worker could be running; with acks_late it fetches the next only when the
  job ends, so a cohort's shards spread over every live worker (bench/bench_workers.py: 20 shards,
  10 and 10 on two workers, alternating);
- prefork pool, one child, worker_max_tasks_per_child=1: the job runs in a child the master
  outlives (with the solo pool the job's crash would be the worker's crash, and its message would
  wait for the visibility timeout), and every job starts in a fresh process (GPU memory and
  whatever a job leaked go back to the system). torch and model/ are imported by the master once,
  so a fresh child costs a fork, not an import (PROMPTEHR_WORKER_MAX_TASKS_PER_CHILD=0 keeps children:
  on a GPU it saves the CUDA start-up of every shard, at the price of the isolation);
- visibility_timeout (Redis): how long an unacknowledged message stays with a worker before Redis
  gives it to another; it must exceed the longest job, or a long training would be delivered
  again while it runs (harmless, the claim refuses it, but wasteful);
- JSON only: no pickle in either direction;
- time limits per task (task_annotations), behind the runner's own (worker/execution.py fails a
  job past settings.<kind>_time_limit_seconds, and finishes the row of one that does not stop within
  settings.job_stop_grace_seconds): Celery's soft limit, a grace later, raises in a body stuck in a
  blocking call; its hard limit, one more grace later, ends the child, so a stuck job does not hold
  the worker for ever.

Recovery that needs no message: a timer in the master sends again, every few minutes and at start,
the jobs nobody is working on: running with a stale heartbeat or a dead claimant on this host, and
queued ones whose message the broker no longer holds.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery, bootsteps, signals

from promptehr.service import store
from promptehr.service.models.base import utcnow
from promptehr.service.settings import get_settings
from promptehr.worker.broker import messages_naming
from promptehr.worker.claims import orphaned_jobs, queued_jobs
from promptehr.worker.context import forget_process_context, make_context
from promptehr.worker.dispatch import finish_abandoned
from promptehr.worker.execution import TIME_LIMIT_SETTINGS, time_limit
from promptehr.worker.presence import Presence, sweep_interval

log = logging.getLogger(__name__)

QUEUE = "gpu"
# Longer than the longest job (a base-preset training on a large dataset); settings may override it.
DEFAULT_VISIBILITY_TIMEOUT = 7 * 24 * 3600


def visibility_timeout(settings) -> int:
    """settings.celery_visibility_timeout_seconds (PROMPTEHR_CELERY_VISIBILITY_TIMEOUT_SECONDS)."""
    configured = settings.celery_visibility_timeout_seconds
    return DEFAULT_VISIBILITY_TIMEOUT if configured is None else configured


def max_tasks_per_child(settings) -> int | None:
    """settings.worker_max_tasks_per_child (PROMPTEHR_WORKER_MAX_TASKS_PER_CHILD): 1, a fresh child per
    job, by default; 0 means never recycle (saves a CUDA start-up per shard, keeps what jobs leak)."""
    return settings.worker_max_tasks_per_child or None


def time_limits(settings) -> dict:
    """task name -> Celery's soft and hard time limits (seconds) for it (see the module's docstring)."""
    grace = settings.job_stop_grace_seconds
    return {store.task_name(kind): {"soft_time_limit": time_limit(settings, kind) + 2 * grace,
                                    "time_limit": time_limit(settings, kind) + 3 * grace}
            for kind in TIME_LIMIT_SETTINGS}


def celery_config() -> dict:
    settings = get_settings()
    queue = settings.celery_queue or QUEUE
    return {
        "broker_url": settings.celery_broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": visibility_timeout(settings)},
        "task_default_queue": queue,
        "task_routes": {"promptehr.*": {"queue": queue}},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_annotations": time_limits(settings),
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": 1,
        "worker_pool": "prefork",
        "worker_max_tasks_per_child": max_tasks_per_child(settings),
        "worker_send_task_events": False,
        "worker_hijack_root_logger": True,
    }


app = Celery("promptehr", include=["promptehr.worker.tasks"])
app.add_defaults(celery_config)


# -- the master: imports once, recovery sweep --------------------------------------------------


@signals.worker_init.connect
def _preload(**_):
    """Import torch and the model code (the task modules import it) in the master, so each forked
    child starts warm; here, not at the top, since importing this module must not import torch
    (tests/test_worker_config.py). Nothing here touches CUDA (a forked child could not use a CUDA
    context its parent made)."""
    import torch  # noqa: F401

    import promptehr.worker.evaluate_task
    import promptehr.worker.generate_task
    import promptehr.worker.train_task  # noqa: F401


@signals.worker_process_init.connect
def _fresh_child(**_):
    forget_process_context()


def send_orphans() -> int:
    """Send again the jobs nobody works on; returns how many. Two kinds:
    - running, with a stale heartbeat or a claimant process that is gone on this host;
    - queued for longer than a sweep interval with no message naming them in the broker (it was
      lost: Redis restarted empty or was flushed).
    Runs in the master, with an engine of its own that is disposed before returning (a later fork
    must not inherit its connections). A job sent twice runs once: the claim decides."""
    ctx = make_context()
    try:
        finish_abandoned(ctx)  # before the orphans: a job asked to stop is finished, never sent again
        orphans = orphaned_jobs(ctx, include_queued=False)
        waiting = queued_jobs(ctx, created_before=utcnow() - timedelta(seconds=sweep_interval(ctx.settings)))
    finally:
        ctx.close()
    queue = app.conf.task_default_queue
    resend = [(kind, job_id, "has no live worker") for kind, job_id in orphans]
    if waiting:
        present = messages_naming(app.conf.broker_url, queue, [job_id for _, job_id in waiting])
        resend += [(kind, job_id, "is queued but the broker holds no message for it")
                   for kind, job_id in waiting if job_id not in present]
    for kind, job_id, why in resend:
        log.warning("%s %s %s: sending it again", kind, job_id, why)
        app.send_task(store.task_name(kind), args=[job_id], queue=queue)
    return len(resend)


def _sweep_safely() -> None:
    try:
        send_orphans()
    except Exception:
        log.exception("sweep for orphaned jobs failed")


class OrphanSweep(bootsteps.StartStopStep):
    """Every few minutes (on the worker's own timer, no thread) send orphaned jobs again."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        interval = sweep_interval(get_settings())
        self.tref = worker.timer.call_repeatedly(interval, _sweep_safely, (), priority=10)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None


app.steps["worker"].add(OrphanSweep)
app.steps["worker"].add(Presence)  # the workers table: what POST /training-jobs checks `devices` against


@signals.worker_ready.connect
def _sweep_at_start(**_):
    _sweep_safely()
