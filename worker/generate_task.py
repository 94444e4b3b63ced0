"""promptehr.generate [shard_id]: generate one shard of a cohort and store its patients.

Patients are generated and inserted a batch at a time, in index order; insert_patients ignores
indices already stored, and a redelivered shard starts after the ones its predecessor stored (the
cohort's patient i depends on (seed, i) alone, so where a shard restarts changes nothing). The call
that marks the last shard succeeded gets the new report's id from the store and queues
"promptehr.evaluate" for it.
"""
from __future__ import annotations

import logging

from promptehr.model.generation.cohort import CohortSpec, generate_cohort
from promptehr.service import jobs, store
from promptehr.worker.claims import Lease
from promptehr.worker.context import WorkerContext
from promptehr.worker.execution import Stopped, run_job
from promptehr.worker.model_loading import load_model_bundle

log = logging.getLogger(__name__)

KIND = "generate"
DEFAULT_BATCH = 256


def generate_shard(ctx: WorkerContext, lease: Lease) -> None:
    shard_id = lease.job_id
    with ctx.session() as session:
        shard = store.get_shard(session, shard_id)
        cohort = store.get_cohort(session, shard.cohort_id)
        model_row = store.get_model(session, cohort.model_id)
        done = store.stored_prefix(session, cohort.id, shard.start_index, shard.count)
    if model_row is None:
        raise ValueError(f"model {cohort.model_id} of cohort {cohort.id} does not exist")

    device = ctx.get_device()
    bundle = load_model_bundle(ctx.model_root, model_row, device)
    spec = CohortSpec.from_dict(cohort.spec or {})
    batch = ctx.settings.generation_batch_size or DEFAULT_BATCH
    stop = shard.start_index + shard.count
    lease.progress(done, shard.count, "patients", force=True)

    position = shard.start_index + done
    while position < stop:
        if lease.should_stop():
            raise Stopped
        end = min(position + batch, stop)
        patients = generate_cohort(
            bundle, spec, cohort.n_patients, cohort.seed, start=position, stop=end, batch_size=batch, device=device
        )
        with ctx.session() as session:
            store.insert_patients(session, cohort.id, position, [p.to_dict() for p in patients])
        position = end
        lease.progress(position - shard.start_index, shard.count, "patients", force=position >= stop)

    with ctx.session() as session:
        report_id = store.mark_succeeded(session, KIND, shard_id, worker_id=lease.worker_id)
    if report_id is not None:
        log.info("cohort %s: last shard done; evaluating as report %s", cohort.id, report_id)
        jobs.enqueue("evaluate", report_id, ctx.settings)


def run(shard_id: str, ctx: WorkerContext, **claim) -> str:
    return run_job(ctx, KIND, shard_id, generate_shard, **claim)
