"""Loading a registered model's checkpoint, verified before any of it is used.

Two checks: the checkpoint's manifest.json must have the sha256 recorded on the model row when it
was registered (so a swapped or edited checkpoint directory is refused), and `load_checkpoint`
verifies every file against that manifest. Either failure is a CheckpointError naming the file;
the job fails with it as its reason.

The last bundle loaded is kept for the next shard of the same model until `clear_cache()` (the
embedded runner clears it when it has nothing left to do).

model.nn.checkpoint is imported on first use, not at the top: it imports torch (about 1.7 s and
170 MB of memory, measured on the CPU build), and the embedded runner imports this module (for
clear_cache) when `promptehr serve` starts, long before a job needs a checkpoint.
"""
from __future__ import annotations

import threading
from pathlib import Path

from promptehr.model.errors import CheckpointError
from promptehr.model.tokens.checkpoint_codes import (
    checkpoint_dir,  # re-exported: the one rule of where a row's checkpoint is
)

_cache: dict[tuple, object] = {}
_lock = threading.Lock()


def relative_to_root(model_root: Path, directory: Path) -> str:
    try:
        return str(Path(directory).resolve().relative_to(Path(model_root).resolve()))
    except ValueError:
        return str(Path(directory).resolve())


def verify_registered(directory: Path, manifest_sha256: str) -> None:
    """The checkpoint's manifest is the one registered with the model (CheckpointError otherwise)."""
    # on first use: see the module's docstring
    from promptehr.model.nn.checkpoint import MANIFEST, sha256_of

    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{manifest}: missing; the model's checkpoint is gone or incomplete")
    if sha256_of(manifest) != manifest_sha256:
        raise CheckpointError(
            f"{manifest}: sha256 differs from the one registered with the model (checkpoint replaced or modified)"
        )


def load_model_bundle(model_root: Path, model_row, device: str):
    """(model, vocab, tokenizer, config) of a Model row, verified (manifest digest and every file)."""
    # on first use: see the module's docstring
    from promptehr.model.nn.checkpoint import load_checkpoint

    directory = checkpoint_dir(model_root, model_row.checkpoint_path)
    verify_registered(directory, model_row.manifest_sha256)
    key = (str(directory), model_row.manifest_sha256, str(device))
    with _lock:
        if key in _cache:
            return _cache[key]
        bundle = load_checkpoint(directory, device=device)
        _cache.clear()
        _cache[key] = bundle
        return bundle


def clear_cache() -> None:
    with _lock:
        _cache.clear()
