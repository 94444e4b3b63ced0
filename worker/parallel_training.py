"""A training job on several devices of this worker: `devices` processes under torch.distributed
(model/training/distributed.py), gloo processes on a CPU worker, one per GPU on a CUDA one. Rank 0
writes the checkpoint, the log and the resume state, and config.json and training_log.jsonl record
world_size.

The ranks are started by `python -m torch.distributed.run --standalone` (torchrun) in a subprocess, not
by the in-process launcher `promptehr train --nproc` uses: a Celery pool child is a daemonic process,
which multiprocessing forbids to have children ("daemonic processes are not allowed to have children"),
and a subprocess also spares the embedded runner's thread torch's signal handlers. Each rank runs this
module's `__main__` with the private folder as its argument.

The job's process keeps its lease (heartbeat, cancel watch) while the ranks train in processes of their
own, which cannot reach the lease: a thread here passes a stop request down as a file the ranks poll
(every step, as should_stop) and rank 0's progress up from a file it rewrites after each step. The job
loads and splits the dataset once (with the data root's checks and limits); the ranks read the split
from a pickle in the same private folder.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from promptehr.model.nn.config import TrainConfig
from promptehr.model.patient import Patient
from promptehr.model.training import distributed
from promptehr.model.training.train import TrainResult, train
from promptehr.worker.claims import Lease
from promptehr.worker.context import WorkerContext
from promptehr.worker.presence import offered_devices

STOP, PROGRESS, JOB, RESULT, LOG = "stop", "progress.json", "job.pickle", "result.pickle", "ranks.log"
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class RankJob:
    """What every rank needs, plain and picklable."""
    config: TrainConfig
    out: str
    resume: bool
    device: str


def rank_main(control: Path) -> TrainResult:
    """One rank (a process torchrun started); rank 0 leaves its result in the folder."""
    with open(control / JOB, "rb") as f:  # written by train_on_devices, in a folder of its own
        job, train_set, val_set = pickle.load(f)

    def progress(event: dict) -> None:  # rank 0 only (train() gives the others none)
        if "step" in event and "total_steps" in event:
            tmp = control / f".{PROGRESS}.{os.getpid()}"
            tmp.write_text(json.dumps({"step": event["step"], "total_steps": event["total_steps"],
                                       "epoch_end": event.get("event") == "epoch"}))
            os.replace(tmp, control / PROGRESS)  # whole, never half-written, for the reader

    result = train(train_set, val_set, job.config, job.out, progress=progress, should_stop=(control / STOP).exists,
                   resume=job.resume, device=job.device)
    if distributed.env_rank() == 0:
        with open(control / RESULT, "wb") as f:
            pickle.dump(result, f)
    return result


def check_devices(ctx: WorkerContext, devices: int) -> None:
    """ValueError (the job fails, saying why) when this worker offers fewer devices than the job asks:
    POST checked that some live worker has them, not that this one does."""
    kind, offered = offered_devices(ctx.settings, ctx.get_device())
    if offered < devices:
        raise ValueError(f"the job asks for {devices} devices and this worker offers {offered} ({kind}; "
                         f"PROMPTEHR_CPU_DEVICES on a CPU worker): give such jobs a queue whose workers have them")


def train_on_devices(ctx: WorkerContext, lease: Lease, job: RankJob, devices: int, train_set: list[Patient],
                     val_set: list[Patient]) -> TrainResult:
    """Train `job` on `devices` processes -> rank 0's result."""
    check_devices(ctx, devices)
    with tempfile.TemporaryDirectory(prefix="promptehr-ranks-") as folder:
        control = Path(folder)
        with open(control / JOB, "wb") as f:
            pickle.dump((job, train_set, val_set), f, protocol=pickle.HIGHEST_PROTOCOL)
        done = threading.Event()
        relay = threading.Thread(target=_relay, args=(lease, control, done), name="rank-relay", daemon=True)
        relay.start()
        try:
            with open(control / LOG, "wb") as log:
                code = subprocess.call([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                        "--nproc_per_node", str(devices), "-m", __name__, str(control)],
                                       stdout=log, stderr=subprocess.STDOUT)
        finally:
            done.set()
            relay.join(timeout=10)
        _forward_progress(lease, control, force=True)
        if code != 0 or not (control / RESULT).is_file():
            raise RuntimeError(f"training on {devices} devices failed (exit code {code}): {_last_error(control / LOG)}")
        with open(control / RESULT, "rb") as f:
            return pickle.load(f)


def _last_error(log: Path) -> str:
    """The ranks' last exception line (what the job's error says), else their last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
    return (errors or lines or ["no output"])[-1]


def _relay(lease: Lease, control: Path, done: threading.Event) -> None:
    """Until the ranks end: a stop request down (the stop file), rank 0's progress up."""
    last = None
    while not done.wait(POLL_SECONDS):
        if lease.should_stop():
            (control / STOP).touch()
        last = _forward_progress(lease, control, last)


def _forward_progress(lease: Lease, control: Path, last: dict | None = None, *, force: bool = False) -> dict | None:
    """Rank 0's latest progress to the lease unless it is `last` (already forwarded); returns it."""
    try:
        p = json.loads((control / PROGRESS).read_text())
    except (OSError, ValueError):  # no step yet
        return last
    if p != last or force:
        lease.progress(p["step"], p["total_steps"], "steps", force=force or p["epoch_end"])
    return p


if __name__ == "__main__":
    rank_main(Path(sys.argv[1]))
