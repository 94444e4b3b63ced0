"""promptehr.generate [shard_id]: generate one shard of a cohort and store its patients.

Patients are generated and inserted a batch at a time, in index order; insert_patients ignores
indices already stored, and a redelivered shard starts after the ones its predecessor stored (the
cohort's patient i depends on (seed, i) alone, so where a shard restarts changes nothing). The call
that marks the last shard succeeded gets the new report's id from the store and queues
"promptehr.evaluate" for it.

A spec without `age` or `sex` (POST /cohorts left them out) takes the model's learned population
(model/generation/population.py, the checkpoint's population.json; an older checkpoint: the old default,
logged as a warning). Each shard writes the resolved spec, with its "demographics" record of where age and
sex came from, back to the cohort before generating: every shard resolves the same, the cohort's record
(GET /cohorts/{id}) says which default was used, and the report compares the cohort with it.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa

from promptehr.model.generation.cohort import CohortSpec, generate_cohort
from promptehr.model.generation.options import DEFAULT_BATCH_SIZE
from promptehr.model.generation.population import resolve_demographics
from promptehr.service import jobs, store
from promptehr.service.models import Cohort
from promptehr.service.store.base import start_write
from promptehr.worker.claims import Lease
from promptehr.worker.context import WorkerContext
from promptehr.worker.execution import Stopped, run_job
from promptehr.worker.model_loading import checkpoint_dir, load_model_bundle

log = logging.getLogger(__name__)

KIND = "generate"


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
    bundle = load_model_bundle(ctx.model_root, model_row, device)  # (verifies population.json with the manifest)
    spec = CohortSpec.from_dict(resolved_spec(ctx, cohort, checkpoint_dir(ctx.model_root, model_row.checkpoint_path)))
    batch = ctx.settings.generation_batch_size or DEFAULT_BATCH_SIZE
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


def resolved_spec(ctx: WorkerContext, cohort, directory) -> dict:
    """The cohort's spec with absent age and sex resolved from the checkpoint, recorded on the cohort row."""
    resolved = resolve_demographics(cohort.spec or {}, directory)
    if resolved.warning:
        log.warning("cohort %s: %s", cohort.id, resolved.warning)
    if resolved.body != (cohort.spec or {}):
        with ctx.session() as session:
            start_write(session)
            session.execute(sa.update(Cohort).where(Cohort.id == cohort.id).values(spec=resolved.body))
            session.commit()
    return resolved.body


def run(shard_id: str, ctx: WorkerContext, **claim) -> str:
    return run_job(ctx, KIND, shard_id, generate_shard, **claim)
