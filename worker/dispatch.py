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

from service import store
from worker.context import WorkerContext

log = logging.getLogger(__name__)

# The task names, from the registry (worker.tasks names its Celery tasks with them).
TRAIN, GENERATE, EVALUATE = store.task_name("train"), store.task_name("generate"), store.task_name("evaluate")
# kind -> the module whose `run(job_id, ctx, **claim)` runs a job of that kind
TASK_MODULES = {"train": "worker.train_task", "generate": "worker.generate_task", "evaluate": "worker.evaluate_task"}


def run_task(task_name: str, job_id: str, ctx: WorkerContext, **claim) -> str:
    """Run task `task_name` on job `job_id`. Returns the outcome (see worker.execution.run_job);
    never raises for a job's own failure. `claim`: worker_id / released, passed to run_job."""
    kind = store.kind_of_task(task_name)
    if kind is None:
        log.error("unknown task %r for job %s: dropped", task_name, job_id)
        return "skipped"
    module = importlib.import_module(TASK_MODULES[kind.name])
    return module.run(str(job_id), ctx, **claim)
