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
own, which cannot reach the lease: while it waits it passes a stop request down as a file the ranks poll
(every step, as should_stop) and rank 0's progress up from a file it rewrites after each step. The job
loads and splits the dataset once (with the data root's checks and limits); the ranks read the split
from a pickle in the same private folder.

Rank 0 leaves its result in the folder once every rank has passed the run's last barrier, before the
process group is torn down: torch's destroy_process_group can hang (pytorch/pytorch#75097, open), and a
CI run saw a devices=2 job stay "running" for 500 s after its last step. So once the result is there
the ranks get EXIT_GRACE seconds to exit; after that their Python stacks are dumped into the ranks' log
(faulthandler on SIGUSR1), the log's tail goes to the worker's log as a warning, the ranks and their
launcher are killed, and the job keeps the result: the checkpoint was complete before the result was
written.
"""
from __future__ import annotations

import faulthandler
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from promptehr.model.nn.config import TrainConfig
from promptehr.model.patient import Patient
from promptehr.model.training import distributed
from promptehr.model.training.prepare import resolve_device
from promptehr.model.training.train import TrainResult, train
from promptehr.worker.claims import Lease
from promptehr.worker.context import WorkerContext
from promptehr.worker.presence import offered_devices

STOP, PROGRESS, JOB, RESULT, LOG = "stop", "progress.json", "job.pickle", "result.pickle", "ranks.log"
POLL_SECONDS = 0.5
EXIT_GRACE = 60.0  # seconds the ranks get to exit once rank 0's result is written (3.5 s in the Celery test)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankJob:
    """What every rank needs, plain and picklable."""
    config: TrainConfig
    out: str
    resume: bool
    device: str


def rank_main(control: Path) -> TrainResult:
    """One rank (a process torchrun started); rank 0 leaves its result in the folder."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a stuck rank's stacks, on the parent's request
    (control / f"rank{distributed.env_rank()}.pid").write_text(str(os.getpid()))
    with open(control / JOB, "rb") as f:  # written by train_on_devices, in a folder of its own
        job, train_set, val_set, holdout, source = pickle.load(f)

    def progress(event: dict) -> None:  # rank 0 only (train() gives the others none)
        if "step" in event and "total_steps" in event:
            tmp = control / f".{PROGRESS}.{os.getpid()}"
            tmp.write_text(json.dumps({"step": event["step"], "total_steps": event["total_steps"],
                                       "epoch_end": event.get("event") == "epoch"}))
            os.replace(tmp, control / PROGRESS)  # whole, never half-written, for the reader

    # The group is joined here, not in train(), so that the result is written before it is torn down.
    with distributed.session(resolve_device(job.device)) as (ctx, device):
        result = train(train_set, val_set, job.config, job.out, progress=progress,
                       should_stop=(control / STOP).exists, resume=job.resume, device=str(device),
                       holdout=holdout, source=source)
        if ctx.main:  # every rank has passed train()'s last barrier: the checkpoint is complete
            tmp = control / f".{RESULT}"
            with open(tmp, "wb") as f:
                pickle.dump(result, f)
            os.replace(tmp, control / RESULT)
    return result


def check_devices(ctx: WorkerContext, devices: int) -> None:
    """ValueError (the job fails, saying why) when this worker offers fewer devices than the job asks:
    POST checked that some live worker has them, not that this one does."""
    kind, offered = offered_devices(ctx.settings, ctx.get_device())
    if offered < devices:
        raise ValueError(f"the job asks for {devices} devices and this worker offers {offered} ({kind}; "
                         f"PROMPTEHR_CPU_DEVICES on a CPU worker): give such jobs a queue whose workers have them")


def train_on_devices(ctx: WorkerContext, lease: Lease, job: RankJob, devices: int, train_set: list[Patient],
                     val_set: list[Patient], holdout: list[Patient] | None = None,
                     source: dict | None = None) -> TrainResult:
    """Train `job` on `devices` processes -> rank 0's result. `holdout` and `source` are train()'s (the
    model card's held-out set and data source)."""
    check_devices(ctx, devices)
    with tempfile.TemporaryDirectory(prefix="promptehr-ranks-") as folder:
        control = Path(folder)
        with open(control / JOB, "wb") as f:
            pickle.dump((job, train_set, val_set, holdout, source), f, protocol=pickle.HIGHEST_PROTOCOL)
        with open(control / LOG, "wb") as ranks_log:
            launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                         "--nproc_per_node", str(devices), "-m", __name__, str(control)],
                                        stdout=ranks_log, stderr=subprocess.STDOUT)
            try:
                code = _watch(lease, launcher, control)
            finally:
                if launcher.poll() is None:  # this process is being interrupted: take the ranks with it
                    _kill(launcher, control)
        _forward_progress(lease, control, force=True)
        if not (control / RESULT).is_file():
            raise RuntimeError(f"training on {devices} devices failed (exit code {code}): {_last_error(control / LOG)}")
        if code not in (0, None):  # after the result: a rank failed in its teardown, the training is whole
            log.warning("the ranks exited with code %s after writing their result; the log ends:\n%s", code,
                        _tail(control / LOG))
        with open(control / RESULT, "rb") as f:
            return pickle.load(f)


def _watch(lease: Lease, launcher: subprocess.Popen, control: Path, grace: float = EXIT_GRACE) -> int | None:
    """Until the launcher exits: a stop request down (the stop file), rank 0's progress up, and the ranks
    killed when they outstay `grace` seconds after the result -> the launcher's exit code (None: killed)."""
    last, result_seen = None, None
    while launcher.poll() is None:
        time.sleep(POLL_SECONDS)
        if lease.should_stop():
            (control / STOP).touch()
        last = _forward_progress(lease, control, last)
        if result_seen is None and (control / RESULT).is_file():
            result_seen = time.monotonic()
        if result_seen is not None and time.monotonic() - result_seen > grace and launcher.poll() is None:
            _signal_ranks(control, signal.SIGUSR1)  # their stacks into the ranks' log
            time.sleep(1.0)
            log.warning("the ranks had not exited %.0f s after writing their result; stopping them. The ranks' "
                        "log ends:\n%s", grace, _tail(control / LOG))
            _kill(launcher, control)
            return None
    if result_seen is not None:
        log.info("the ranks exited %.1f s after writing their result", time.monotonic() - result_seen)
    return launcher.returncode


def _signal_ranks(control: Path, sig: signal.Signals) -> None:
    """`sig` to each rank still running: a process whose pid a rank wrote and whose command line still
    names this job's folder (a pid the system has given to another process since is left alone)."""
    for pid_file in control.glob("rank*.pid"):
        try:
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline")
            if cmdline.parent.parent.is_dir() and str(control).encode() not in cmdline.read_bytes():
                continue
            os.kill(pid, sig)
        except (OSError, ValueError):  # gone already, or a pid file being written
            pass


def _kill(launcher: subprocess.Popen, control: Path) -> None:
    """The launcher and the ranks (torchrun starts each in a session of its own, so killing it alone
    could leave them behind)."""
    _signal_ranks(control, signal.SIGKILL)
    launcher.kill()
    launcher.wait()


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _last_error(log: Path) -> str:
    """The ranks' last exception line (what the job's error says), else their last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
    return (errors or lines or ["no output"])[-1]


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
