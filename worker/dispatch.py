"""Task name -> task function. Celery's tasks and the embedded runner both come through here, so
both run exactly the same code for a job. Which kind a task name runs is the store's registry
(service/store/job_kinds.py); which module runs a kind is this one's.

The task modules are imported on first use, not at the top: they import torch and the model code
(about 1.7 s), and this module is imported by `import worker.celery_app` (which must not import
torch: tests/test_worker_config.py) and by the embedded runner when `promptehr serve` starts. The
Celery master imports them once at start (worker.celery_app._preload), so its children start warm.
"""
from __future__ import annotations

import importlib
import logging

from promptehr.service import store
from promptehr.worker.claims import abandoned_stops
from promptehr.worker.context import WorkerContext

log = logging.getLogger(__name__)

# The task names, from the registry (worker.tasks names its Celery tasks with them).
TRAIN, GENERATE, EVALUATE = store.task_name("train"), store.task_name("generate"), store.task_name("evaluate")
# kind -> the module whose `run(job_id, ctx, **claim)` runs a job of that kind
TASK_MODULES = {"train": "promptehr.worker.train_task", "generate": "promptehr.worker.generate_task", "evaluate": "promptehr.worker.evaluate_task"}
# outcomes (and row statuses) after which a job's scratch files are of no more use
ENDED = ("failed", "cancelled")


def run_task(task_name: str, job_id: str, ctx: WorkerContext, **claim) -> str:
    """Run task `task_name` on job `job_id`. Returns the outcome (see worker.execution.run_job);
    never raises for a job's own failure. `claim`: worker_id / released, passed to run_job."""
    kind = store.kind_of_task(task_name)
    if kind is None:
        log.error("unknown task %r for job %s: dropped", task_name, job_id)
        return "skipped"
    module = importlib.import_module(TASK_MODULES[kind.name])
    outcome = module.run(str(job_id), ctx, **claim)
    if outcome in ENDED and hasattr(module, "clean_up"):
        clean_up(module, kind.name, str(job_id), ctx)
    return outcome


def finish_abandoned(ctx: WorkerContext) -> int:
    """Mark cancelled the running jobs asked to stop whose worker died first (worker.claims.abandoned_stops),
    and remove their scratch; how many. The sweep calls it."""
    finished = 0
    for kind, job_id, claimant in abandoned_stops(ctx):
        with ctx.session() as session:
            done = store.mark_cancelled(session, kind, job_id, worker_id=claimant)
        if done:
            finished += 1
            log.warning("%s %s: asked to stop, its worker %s is gone: cancelled", kind, job_id, claimant)
            module = importlib.import_module(TASK_MODULES[kind])
            if hasattr(module, "clean_up"):
                clean_up(module, kind, job_id, ctx)
    return finished


def clean_up(module, kind: str, job_id: str, ctx: WorkerContext) -> None:
    """A failed or cancelled job's scratch (a training job's resume state) is removed by its module's
    `clean_up(job_id, ctx)`, once the row says so: a claim another worker took over keeps its files."""
    try:
        with ctx.session() as session:
            row = store.get_job(session, kind, job_id)
            ended = row is not None and row.status in ENDED
        if ended:
            module.clean_up(job_id, ctx)
    except Exception:  # leftover files must not fail the worker; the job's outcome stands
        log.exception("%s %s: could not remove its scratch files", kind, job_id)
