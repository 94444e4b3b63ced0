"""Task name -> task function. Celery's tasks and the embedded runner both come through here, so
both run exactly the same code for a job."""
from __future__ import annotations

import logging

from worker.context import WorkerContext

log = logging.getLogger(__name__)

TRAIN, GENERATE, EVALUATE = "promptehr.train", "promptehr.generate", "promptehr.evaluate"
TASK_NAMES = (TRAIN, GENERATE, EVALUATE)
KIND_OF_TASK = {TRAIN: "train", GENERATE: "generate", EVALUATE: "evaluate"}
TASK_OF_KIND = {v: k for k, v in KIND_OF_TASK.items()}


def run_task(task_name: str, job_id: str, ctx: WorkerContext, **claim) -> str:
    """Run task `task_name` on job `job_id`. Returns the outcome (see worker.execution.run_job);
    never raises for a job's own failure. `claim`: worker_id / released, passed to run_job."""
    if task_name == TRAIN:
        from worker.train_task import run_train as fn
    elif task_name == GENERATE:
        from worker.generate_task import run_generate as fn
    elif task_name == EVALUATE:
        from worker.evaluate_task import run_evaluate as fn
    else:
        log.error("unknown task %r for job %s: dropped", task_name, job_id)
        return "skipped"
    return fn(str(job_id), ctx, **claim)
