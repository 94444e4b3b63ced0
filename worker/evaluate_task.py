"""promptehr.evaluate [report_id]: the report of a finished cohort.

The synthetic cohort is compared to the train split of the model's dataset, with the holdout split
(same split seed as training) as the limit a perfect generator reaches (DESIGN section 6). The
model's own scores (held-out perplexity, reconstruction of held-out records) are added when they are
cheap: reconstruction generates a record per holdout patient, so on a CPU only for small holdouts.
They are an extra: if scoring fails the report is made without them and says why. JSON and HTML are stored on the report row;
mark_succeeded then sets the cohort's report_id and marks the cohort succeeded.
"""
from __future__ import annotations

import logging

from promptehr.model.evaluation import EvaluationConfig, build_report
from promptehr.model.evaluation.html import render_html
from promptehr.model.evaluation.model_scores import model_patients_for
from promptehr.model.evaluation.scorer import load_scorer
from promptehr.model.nn.checkpoint import read_card
from promptehr.model.patient import Patient
from promptehr.model.split import split_patients
from promptehr.service import store
from promptehr.service.data_paths import read_limits
from promptehr.worker.claims import Lease
from promptehr.worker.context import WorkerContext
from promptehr.worker.execution import Stopped, run_job
from promptehr.worker.model_loading import checkpoint_dir, verify_registered
from promptehr.worker.train_task import load_dataset

log = logging.getLogger(__name__)

KIND = "evaluate"
STEPS = 4


def _scorer(ctx: WorkerContext, model_row):
    directory = checkpoint_dir(ctx.model_root, model_row.checkpoint_path)
    verify_registered(directory, model_row.manifest_sha256)
    return load_scorer(directory, ctx.get_device())


def evaluate_report(ctx: WorkerContext, lease: Lease) -> None:
    report_id = lease.job_id
    with ctx.session() as session:
        report = store.get_report(session, report_id)
        cohort = store.get_cohort(session, report.cohort_id)
        model_row = store.get_model(session, cohort.model_id)
        dataset = store.get_dataset(session, model_row.dataset_id)
    lease.progress(0, STEPS, "steps", force=True)

    split_seed = int((model_row.config or {}).get("split_seed", 0))
    real = load_dataset(ctx.data_root, dataset, read_limits(ctx.settings))  # in its registered code system
    train, _validation, holdout = split_patients(real, split_seed)
    lease.progress(1, STEPS, "steps")
    if lease.should_stop():
        raise Stopped

    synthetic: list[Patient] = []
    with ctx.session() as session:
        for rows in store.iter_patients(session, cohort.id, chunk=ctx.settings.export_chunk_rows):
            synthetic.extend(Patient.from_dict(r.patient) for r in rows)
    if len(synthetic) != cohort.n_patients:
        raise ValueError(f"cohort {cohort.id} has {len(synthetic)} stored patients, expected {cohort.n_patients}")
    lease.progress(2, STEPS, "steps")
    if lease.should_stop():
        raise Stopped

    generator = {"model_id": model_row.id, "model_name": model_row.name, "manifest_sha256": model_row.manifest_sha256,
                 "preset": (model_row.config or {}).get("preset"), "mode": (model_row.config or {}).get("mode"),
                 "spec": cohort.spec}

    def report(scorer, generator):
        # model scores on a seeded subsample of a large holdout (its size is in the report)
        config = EvaluationConfig(model_patients=model_patients_for(ctx.get_device()))
        return build_report(synthetic, train, holdout, config=config, model_scorer=scorer, generator=generator,
                            seeds={"cohort": cohort.seed, "n_patients": cohort.n_patients}, split_seed=split_seed,
                            model_card=read_card(checkpoint_dir(ctx.model_root, model_row.checkpoint_path)))

    scorer = _scorer(ctx, model_row)
    try:
        result = report(scorer, generator)
    except Exception as e:
        if scorer is None:
            raise
        log.warning("evaluate %s: model scores failed (%s: %s); reporting without them", report_id, type(e).__name__, e)
        result = report(None, {**generator, "model_scores": f"unavailable: {type(e).__name__}: {e}"[:500]})
    lease.progress(3, STEPS, "steps")
    content, html = result.to_dict(), render_html(result)
    with ctx.session() as session:
        store.save_report(session, report_id, content=content, html=html)
        lease.progress(4, STEPS, "steps", force=True)
        store.mark_succeeded(session, KIND, report_id, worker_id=lease.worker_id)


def run(report_id: str, ctx: WorkerContext, **claim) -> str:
    return run_job(ctx, KIND, report_id, evaluate_report, **claim)
