"""What a task needs besides its id: settings, a database session factory, who it is, which device.

One context per process (built on first use, rebuilt after a fork: a forked Celery child must not
reuse its parent's database connections). The embedded runner builds its own with `make_context`.
"""
from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from promptehr.service.db import make_engine, make_sessionmaker
from promptehr.service.settings import Settings, get_settings


def process_start_ticks(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, from /proc), or "" where unknown. With the
    pid it names a process for good: a pid reused after a restart has another start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def new_worker_id() -> str:
    """host:pid:start.token. Host, pid and start time let a later claimant on the same host tell that
    the process holding a job is gone (see worker.claims); the token tells two claims of one process
    apart."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start_ticks(pid)}.{uuid.uuid4().hex[:8]}"


def pick_device(settings: Settings) -> str:
    """settings.device (PROMPTEHR_DEVICE) when given, else cuda when torch sees one, else cpu."""
    if settings.device:
        return settings.device
    # On first use, not at the top: torch costs about 1.7 s to import, and this module is imported by
    # the embedded runner when `promptehr serve` starts and by every Celery process.
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class WorkerContext:
    settings: Settings
    sessionmaker: sessionmaker[Session]
    device: str | None = None  # None: chosen on first use (imports torch)
    engine: object = None
    # Set by the embedded runner when the process shuts down: running jobs stop and stay resumable.
    shutdown: threading.Event = field(default_factory=threading.Event)

    def session(self) -> Session:
        return self.sessionmaker()

    def get_device(self) -> str:
        if self.device is None:
            self.device = pick_device(self.settings)
        return self.device

    @property
    def model_root(self) -> Path:
        return Path(self.settings.model_root)

    @property
    def data_root(self) -> Path:
        return Path(self.settings.data_root)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def make_context(settings: Settings | None = None, *, device: str | None = None) -> WorkerContext:
    settings = settings or get_settings()
    engine = make_engine(settings.database_url)
    return WorkerContext(settings=settings, sessionmaker=make_sessionmaker(engine), device=device, engine=engine)


_process_context: tuple[int, WorkerContext] | None = None
_lock = threading.Lock()


def process_context() -> WorkerContext:
    """The context of this process (a Celery worker child), built on first use."""
    global _process_context
    with _lock:
        if _process_context is None or _process_context[0] != os.getpid():
            _process_context = (os.getpid(), make_context())
        return _process_context[1]


def forget_process_context() -> None:
    """Drop the cached context without closing pooled connections a parent process owns."""
    global _process_context
    with _lock:
        _process_context = None
