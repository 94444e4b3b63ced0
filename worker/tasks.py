"""The Celery tasks: promptehr.train, promptehr.generate, promptehr.evaluate, each taking one id
(the task names are the job kinds', service/store/job_kinds.py).

Thin on purpose: each hands its id to the same function the embedded runner calls
(worker.dispatch.run_task) with this process's context. A job's own failure is recorded on its
row and the task returns normally (the message is acked); only the death of the process leaves
the message unacknowledged, for the broker to deliver again.
"""
from __future__ import annotations

from promptehr.worker.celery_app import app
from promptehr.worker.context import process_context
from promptehr.worker.dispatch import EVALUATE, GENERATE, TRAIN, run_task


@app.task(name=TRAIN, ignore_result=True)
def train(job_id: str) -> str:
    return run_task(TRAIN, job_id, process_context())


@app.task(name=GENERATE, ignore_result=True)
def generate(shard_id: str) -> str:
    return run_task(GENERATE, shard_id, process_context())


@app.task(name=EVALUATE, ignore_result=True)
def evaluate(report_id: str) -> str:
    return run_task(EVALUATE, report_id, process_context())
