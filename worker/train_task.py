"""promptehr.train [job_id]: train a model on a registered dataset and register it.

The dataset row's path (relative to the data root) and format are loaded, split 80/10/10 with the
job's seed (the split seed is recorded with the model so the evaluation uses the same holdout),
and trained with the job's preset, mode, epochs, seed and options. The checkpoint goes to
`<model_root>/training-jobs/<job_id>/` and the trainer keeps its resume state beside it
(`<job_id>.resume/`): a job redelivered after its worker died resumes from there (on CPU the result
is bitwise that of an uninterrupted run). On success a Model row is registered with the checkpoint
path (relative to the model root), the sha256 of its manifest, its config and the training log.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from service import store
from service.models import Model
from worker.claims import Lease
from worker.context import WorkerContext
from worker.execution import Stopped, run_job
from worker.model_loading import relative_to_root

log = logging.getLogger(__name__)

KIND = "train"
# TrainingJob.options (as the API names them) -> TrainConfig fields.
OPTION_FIELDS = {
    "batch_size": "batch_size",
    "learning_rate": "lr",
    "early_stopping_patience": "patience",
    "max_steps": "max_steps",
    "warmup_steps": "warmup_steps",
    "max_val_patients": "max_val_patients",
}


def job_dir(model_root: Path, job_id: str) -> Path:
    return Path(model_root) / "training-jobs" / job_id


def dataset_path(data_root: Path, path: str) -> Path:
    """The dataset's files: its path is relative to the data root (the API refused anything leaving it)."""
    p = Path(path)
    return p if p.is_absolute() else Path(data_root) / p


def read_training_log(directory: Path) -> list[dict]:
    from model.nn.checkpoint import LOG

    f = directory / LOG
    if not f.is_file():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def _train_config(job):
    from model.nn.config import train_config

    overrides = {field: job.options[name] for name, field in OPTION_FIELDS.items() if name in (job.options or {})}
    return train_config(job.preset, epochs=job.epochs, seed=job.seed, mode=job.mode, **overrides)


def _progress_writer(lease: Lease):
    def progress(event: dict) -> None:
        if "step" in event and "total_steps" in event:
            lease.progress(event["step"], event["total_steps"], "steps", force=event.get("event") == "epoch")

    return progress


def _model_for_job(session, job_id: str) -> Model | None:
    """A Model already registered by an earlier attempt of this job (it died before marking success)."""
    return session.scalar(sa.select(Model).where(Model.training_job_id == job_id))


def train_job(ctx: WorkerContext, lease: Lease) -> None:
    from model.nn.checkpoint import MANIFEST, load_resume, sha256_of
    from model.data import load_patients
    from model.split import split_patients
    from model.training.train import train

    job_id = lease.job_id
    with ctx.session() as session:
        job = store.get_training_job(session, job_id)
        dataset = store.get_dataset(session, job.dataset_id)
        existing = _model_for_job(session, job_id)
    if existing is not None:  # registered, then the worker died: only the status is missing
        with ctx.session() as session:
            store.mark_succeeded(session, KIND, job_id, model_id=existing.id, worker_id=lease.worker_id)
        return
    if dataset is None:
        raise ValueError(f"dataset {job.dataset_id} does not exist")

    config = _train_config(job)
    out = job_dir(ctx.model_root, job_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    resume = job.attempt > 1 and load_resume(out) is not None
    if resume:
        log.info("train %s: resuming from %s", job_id, out)

    patients = load_patients(dataset_path(ctx.data_root, dataset.path), format=dataset.format)
    split_seed = job.seed
    train_patients, val_patients, _holdout = split_patients(patients, split_seed)
    if lease.should_stop():
        raise Stopped
    result = train(
        train_patients, val_patients, config, out,
        progress=_progress_writer(lease), should_stop=lease.should_stop, resume=resume, device=ctx.get_device(),
    )
    if result.status == "stopped":
        raise Stopped
    lease.flush_progress()

    config_json = json.loads((out / "config.json").read_text())
    metrics = {
        "status": result.status,
        "epochs_run": result.epochs_run,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "seconds": round(result.seconds, 3),
        "resumed": resume,
        "log": read_training_log(out),
    }
    with ctx.session() as session:
        try:
            model = store.create_model(
                session,
                name=f"{dataset.name}-{job.preset}-{job_id[:8]}",
                dataset_id=dataset.id,
                training_job_id=job_id,
                checkpoint_path=relative_to_root(ctx.model_root, out),
                manifest_sha256=sha256_of(out / MANIFEST),
                config={**config_json, "split_seed": split_seed, "preset": job.preset, "mode": job.mode,
                        "dataset_format": dataset.format},
                metrics=metrics,
            )
        except IntegrityError:  # a concurrent attempt registered it first
            session.rollback()
            model = _model_for_job(session, job_id)
        model_id = model.id
        store.mark_succeeded(session, KIND, job_id, model_id=model_id, worker_id=lease.worker_id)
    log.info("train %s: model %s registered (%s)", job_id, model_id, result.status)


def run_train(job_id: str, ctx: WorkerContext, **claim) -> str:
    return run_job(ctx, KIND, job_id, train_job, **claim)
