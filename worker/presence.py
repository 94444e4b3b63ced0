"""What a worker tells the API about itself: a row of the workers table (service/models/worker.py) with
its host, the queue it takes jobs from and the devices it offers one training job, written at start and
every sweep interval, deleted when it stops. POST /training-jobs counts a worker as live while its row
is younger than job_stale_after_seconds (the window of a job's heartbeat), and refuses a `devices` that
no live worker of its queue offers.

Who publishes: the process that takes the jobs, once per worker: the Celery master (on its timer, so a
busy pool child does not make it look dead) and the runner inside `promptehr serve` (a thread).

Devices offered (`offered_devices`): a CUDA worker its GPUs (PROMPTEHR_DEVICE=cuda:N pins it to one);
a CPU worker `settings.cpu_devices` (PROMPTEHR_CPU_DEVICES, default 1) gloo processes; mps one.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from celery import bootsteps

from promptehr.service import store
from promptehr.service.settings import Settings, get_settings
from promptehr.worker.context import WorkerContext, make_context, process_start_ticks

log = logging.getLogger(__name__)


def offered_devices(settings: Settings, device: str | None = None) -> tuple[str, int]:
    """(device kind, how many one training job may use) for `device` (default: settings.device, else
    CUDA when torch sees a GPU). Safe before a fork: it never creates a CUDA context."""
    device = device or settings.device
    if device == "cpu":
        return "cpu", settings.cpu_devices
    if device and device != "cuda":  # cuda:N or mps: one device
        return device.split(":")[0], 1
    # Here, not at the top: importing this module must not import torch (celery_app imports it; torch
    # is about 1.7 s). device_count asks NVML first and then does not poison fork (torch's note), so the
    # Celery master can call it and still fork its pool children.
    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        return "cuda", gpus
    return ("cuda", 0) if device == "cuda" else ("cpu", settings.cpu_devices)


def presence_id() -> str:
    """host:pid:start of this process: stable for its life, another for a restarted one."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start_ticks(pid)}"


def publish(ctx: WorkerContext, queue: str) -> None:
    kind, count = offered_devices(ctx.settings, ctx.device)
    with ctx.session() as session:
        store.publish_worker(session, presence_id(), hostname=socket.gethostname(), queue=queue,
                             device_kind=kind, device_count=count)


def withdraw(ctx: WorkerContext) -> None:
    with ctx.session() as session:
        store.remove_worker(session, presence_id())


def _safely(action, *args) -> None:
    try:
        action(*args)
    except Exception:  # a database hiccup: the next beat tries again; the job machinery is unaffected
        log.exception("publishing this worker's presence failed")


def sweep_interval(settings: Settings) -> float:
    """The workers' sweep interval (worker.celery_app): at least two beats per staleness window."""
    return max(5.0, min(300.0, settings.job_stale_after_seconds / 2))


class Beacon:
    """The embedded runner's presence: publish now and every sweep interval from a thread of its own."""

    def __init__(self, ctx: WorkerContext, queue: str = store.EMBEDDED_QUEUE, every: float | None = None):
        self.ctx, self.queue = ctx, queue
        self.every = every or sweep_interval(ctx.settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="promptehr-presence", daemon=True)

    def start(self) -> Beacon:
        self._thread.start()
        return self

    def _beat(self) -> None:
        while True:
            _safely(publish, self.ctx, self.queue)
            if self._stop.wait(self.every):
                return

    def stop(self) -> None:
        """Stop beating and delete the row; once (the runner's stop runs again at exit)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        _safely(withdraw, self.ctx)


def _publish_from_master(queue: str, *, remove: bool = False) -> None:
    """In the Celery master, with an engine of its own disposed before returning (a later fork must not
    inherit its connections), as the orphan sweep does."""
    ctx = make_context()
    try:
        _safely(withdraw if remove else publish, ctx, *(() if remove else (queue,)))
    finally:
        ctx.close()


class Presence(bootsteps.StartStopStep):
    """The Celery worker's presence: at start, on the worker's timer every sweep interval, and removed
    at a clean stop."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        queue = worker.app.conf.task_default_queue
        _publish_from_master(queue)
        self.tref = worker.timer.call_repeatedly(sweep_interval(get_settings()), _publish_from_master, (queue,), priority=10)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
            _publish_from_master(worker.app.conf.task_default_queue, remove=True)
