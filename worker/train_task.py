"""promptehr.train [job_id]: train a model on a registered dataset and register it.

The dataset row's path (relative to the data root) and format are loaded, split 80/10/10 with the
job's seed (the split seed is recorded with the model so the evaluation uses the same holdout),
and trained with the job's preset, mode, epochs, seed and options. The checkpoint goes to
`<model_root>/training-jobs/<job_id>/` and the trainer keeps its resume state beside it
(`<job_id>.resume/`): a job redelivered after its worker died resumes from there (on CPU the result
is bitwise that of an uninterrupted run). On success a Model row is registered with the checkpoint
path (relative to the model root), the sha256 of its manifest, its config (with the code systems of
its vocabulary: GET /models/{id} lists them) and the training log.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from promptehr.model.data import ReadLimits, load_patients
from promptehr.model.nn.checkpoint import LOG, MANIFEST, VOCAB, load_resume, read_card, resume_dir, sha256_of
from promptehr.model.nn.config import train_config
from promptehr.model.patient import Patient
from promptehr.model.split import split_patients
from promptehr.model.training.train import train
from promptehr.service import store
from promptehr.service.data_paths import read_limits
from promptehr.service.removal import remove_under
from promptehr.worker.claims import Lease
from promptehr.worker.context import WorkerContext
from promptehr.worker.execution import Stopped, run_job
from promptehr.worker.model_loading import relative_to_root
from promptehr.worker.parallel_training import RankJob, train_on_devices

log = logging.getLogger(__name__)

KIND = "train"
# TrainingJob.options (as the API names them) -> TrainConfig fields.
OPTION_FIELDS = {
    "batch_size": "batch_size",
    "learning_rate": "lr",
    "early_stopping_patience": "patience",
    "max_steps": "max_steps",
    "learn_time": "time",
    "warmup_steps": "warmup_steps",
    "max_val_patients": "max_val_patients",
}


def job_dir(model_root: Path, job_id: str) -> Path:
    return Path(model_root) / "training-jobs" / job_id


def dataset_path(data_root: Path, path: str) -> Path:
    """The dataset's files: its path is relative to the data root (the API refused anything leaving
    it; load_dataset checks again, since the files may have changed since)."""
    p = Path(path)
    return p if p.is_absolute() else Path(data_root) / p


def load_dataset(data_root: Path, dataset, limits: ReadLimits | None = None) -> list[Patient]:
    """The dataset row's patients, read as registered: its format, and the code system of POST
    /datasets (kept in its stats, service/store/datasets.py; None: each source's own). The files are
    checked now, not only at registration: each must still resolve inside the data root (a symlink
    repointed out of it is refused) and be a regular file, within `limits` (default: the root only)."""
    limits = limits or ReadLimits(root=Path(data_root))
    return load_patients(dataset_path(data_root, dataset.path), format=dataset.format,
                         code_system=(dataset.stats or {}).get("code_system"), limits=limits)


def code_systems_of(directory: Path) -> list[str]:
    """The systems of a checkpoint's vocabulary; a vocab.json without the field is ICD-9-CM only."""
    return json.loads((directory / VOCAB).read_text()).get("code_systems", ["icd9"])


def read_training_log(directory: Path) -> list[dict]:
    f = directory / LOG
    if not f.is_file():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def _train_config(job):
    overrides = {field: job.options[name] for name, field in OPTION_FIELDS.items() if name in (job.options or {})}
    return train_config(job.preset, epochs=job.epochs, seed=job.seed, mode=job.mode, **overrides)


def _progress_writer(lease: Lease):
    def progress(event: dict) -> None:
        if "step" in event and "total_steps" in event:
            lease.progress(event["step"], event["total_steps"], "steps", force=event.get("event") == "epoch")

    return progress


def _train(ctx: WorkerContext, lease: Lease, job, dataset, out: Path):
    """Train into `out` (resuming an earlier attempt's snapshot); returns (TrainResult, resumed).
    Raises Stopped when the lease says to stop."""
    config = _train_config(job)
    out.parent.mkdir(parents=True, exist_ok=True)
    resume = job.attempt > 1 and load_resume(out) is not None
    if resume:
        log.info("train %s: resuming from %s", job.id, out)

    patients = load_dataset(ctx.data_root, dataset, read_limits(ctx.settings))
    train_patients, val_patients, holdout = split_patients(patients, job.seed)  # split seed: the job's
    if lease.should_stop():
        raise Stopped
    devices = int((job.options or {}).get("devices", 1))
    source = {"format": dataset.format, "paths": [dataset.path]}  # the model card's (training/card.py)
    if devices > 1:  # data-parallel on this worker's devices (worker/parallel_training.py)
        result = train_on_devices(ctx, lease, RankJob(config, str(out), resume, ctx.get_device()), devices,
                                  train_patients, val_patients, holdout, source)
    else:
        result = train(
            train_patients, val_patients, config, out,
            progress=_progress_writer(lease), should_stop=lease.should_stop, resume=resume, device=ctx.get_device(),
            holdout=holdout, source=source,
        )
    if result.status == "stopped":
        raise Stopped
    lease.flush_progress()
    return result, resume


def finite(value):
    """`value` with every NaN or infinite float as None: PostgreSQL's JSON refuses them ("invalid input syntax
    for type json"), and a validation split of a few patients leaves some measures undefined (NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _metrics(result, resume: bool, out: Path) -> dict:
    return finite({
        "status": result.status,
        "epochs_run": result.epochs_run,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "seconds": round(result.seconds, 3),
        "resumed": resume,
        "log": read_training_log(out),
        "card": read_card(out),  # the checkpoint's card.json (model/training/card.py)
    })


def _register(ctx: WorkerContext, lease: Lease, job, dataset, out: Path, metrics: dict) -> str:
    """Register the checkpoint in `out` as the job's model and mark the job succeeded; the model's id."""
    config_json = json.loads((out / "config.json").read_text())
    with ctx.session() as session:
        model = store.register_trained_model(
            session,
            training_job_id=job.id,
            name=f"{dataset.name}-{job.preset}-{job.id[:8]}",
            dataset_id=dataset.id,
            checkpoint_path=relative_to_root(ctx.model_root, out),
            manifest_sha256=sha256_of(out / MANIFEST),
            config={**config_json, "split_seed": job.seed, "preset": job.preset, "mode": job.mode,
                    "dataset_format": dataset.format, "code_systems": code_systems_of(out)},
            metrics=metrics,
        )
        model_id = model.id
        store.mark_succeeded(session, KIND, job.id, model_id=model_id, worker_id=lease.worker_id)
    return model_id


def train_job(ctx: WorkerContext, lease: Lease) -> None:
    job_id = lease.job_id
    with ctx.session() as session:
        job = store.get_training_job(session, job_id)
        dataset = store.get_dataset(session, job.dataset_id)
        existing = store.get_model_of_training_job(session, job_id)
    if existing is not None:  # registered, then the worker died: only the status is missing
        with ctx.session() as session:
            store.mark_succeeded(session, KIND, job_id, model_id=existing.id, worker_id=lease.worker_id)
        return
    if dataset is None:
        raise ValueError(f"dataset {job.dataset_id} does not exist")

    out = job_dir(ctx.model_root, job_id)
    result, resume = _train(ctx, lease, job, dataset, out)
    model_id = _register(ctx, lease, job, dataset, out, _metrics(result, resume, out))
    log.info("train %s: model %s registered (%s)", job_id, model_id, result.status)


def clean_up(job_id: str, ctx: WorkerContext) -> None:
    """After the job failed or was cancelled (worker/dispatch.py calls it): its resume state is of no
    more use (a few MB per job), nor is a partial checkpoint no model was registered from. A model
    registered by an attempt that then died keeps its folder. Only under the model root."""
    out = job_dir(ctx.model_root, job_id)
    remove_under(ctx.model_root, resume_dir(out))
    with ctx.session() as session:
        registered = store.get_model_of_training_job(session, job_id) is not None
    if not registered:
        remove_under(ctx.model_root, out)


def run(job_id: str, ctx: WorkerContext, **claim) -> str:
    return run_job(ctx, KIND, job_id, train_job, **claim)
