"""The name `promptehr serve` (cli/serve.py) looks the embedded runner up by; see worker.runner."""
from worker.runner import LocalRunner, install, make_runner

__all__ = ["LocalRunner", "install", "make_runner"]
