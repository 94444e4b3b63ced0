"""The codes a checkpoint's vocabulary knows, read without torch: what the API checks a cohort's
required codes against at POST time (a code outside the vocabulary fails the job in the worker's
Sampler.code_tokens), so that service/ needs neither torch nor model.nn.checkpoint.

The codes are trusted only as the worker would trust the checkpoint (model/nn/checkpoint.py and
worker/model_loading.py): manifest.json must be the one registered with the model (its sha256) and
list vocab.json's sha256. Anything else (no checkpoint there, replaced, edited, unreadable) gives None:
the API cannot vouch for that vocabulary, and the worker refuses such a checkpoint at job time.
Successful reads are cached per (directory, manifest digest): a registered checkpoint never changes,
and a changed one has another digest (and is refused by the worker).
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

# As in model/nn/checkpoint.py (which imports torch); tests/test_hardening_specs.py keeps them in step.
VOCAB, MANIFEST = "vocab.json", "manifest.json"


def checkpoint_dir(model_root: Path, checkpoint_path: str) -> Path:
    """A model row's checkpoint folder: rows keep paths relative to the model root where they can (so the
    API and the workers may mount it at different places); absolute paths are used as they are."""
    p = Path(checkpoint_path)
    return p if p.is_absolute() else Path(model_root) / p


def read_codes(directory: str | Path, manifest_sha256: str) -> frozenset[str] | None:
    """The vocabulary's codes ("4019", "icd10:I10"), or None when the checkpoint cannot be vouched for."""
    try:
        return _read(str(Path(directory).resolve()), manifest_sha256)
    except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable, not JSON, not the registered one
        return None


@lru_cache(maxsize=64)
def _read(directory: str, manifest_sha256: str) -> frozenset[str]:
    d = Path(directory)
    manifest_bytes = (d / MANIFEST).read_bytes()
    if hashlib.sha256(manifest_bytes).hexdigest() != manifest_sha256:
        raise ValueError("not the registered manifest")
    vocab_bytes = (d / VOCAB).read_bytes()
    if hashlib.sha256(vocab_bytes).hexdigest() != json.loads(manifest_bytes)["files"][VOCAB]:
        raise ValueError("vocab.json differs from its manifest entry")
    codes = json.loads(vocab_bytes)["codes"]
    if not all(isinstance(c, str) for c in codes):
        raise ValueError("codes are not strings")
    return frozenset(codes)
