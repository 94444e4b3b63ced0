"""A checkpoint is a directory of exactly these files, none of them executable on load:

    model.safetensors    weights (safetensors: tensors only)
    config.json          {"model": ModelConfig, "train": TrainConfig, "best": {...}} (demographic stats in model)
    vocab.json           the Vocabulary
    training_log.jsonl   one JSON line per epoch
    population.json      the training patients' age histogram and share of women (generation/population.py)
    card.json            the model card: data, preset, epochs, time, held-out perplexity, check cohort (training/card.py)
    manifest.json        {"version": 1, "files": {name: sha256}} of every other file

The last two are written at the end of training; a checkpoint from before them lacks them and still loads.

Loading verifies the manifest first and refuses any mismatch with a CheckpointError naming the file.
Resume state (optimizer, RNG states, counters) lives apart, in the sibling directory `<out>.resume/`,
written with torch.save and read with torch.load(weights_only=True); training removes it on success.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from promptehr.model.errors import CheckpointError
from promptehr.model.nn.config import ModelConfig, TrainConfig, load_json, save_json
from promptehr.model.nn.promptbart import LossWeights, PromptBart
from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.tokens.vocab import Vocabulary

WEIGHTS, CONFIG, VOCAB, LOG, MANIFEST = "model.safetensors", "config.json", "vocab.json", "training_log.jsonl", "manifest.json"
POPULATION, CARD = "population.json", "card.json"
FILES = (WEIGHTS, CONFIG, VOCAB, LOG)
OPTIONAL = (POPULATION, CARD)  # listed in the manifest when present
MANIFEST_VERSION = 1


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _replace(path: Path, write) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _unique_tensors(model) -> dict[str, torch.Tensor]:
    """The state dict with tied aliases dropped, keeping the first name in sorted order: the same bytes in
    every process (safetensors' own save_model records aliases in set order, which varies per process)."""
    sd = model.state_dict()
    seen, out = set(), {}
    for name in sorted(sd):
        t = sd[name]
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key not in seen:
            seen.add(key)
            out[name] = t.detach().cpu().contiguous()
    return out


def write_manifest(directory: str | Path) -> None:
    d = Path(directory)
    files = {name: sha256_of(d / name) for name in FILES + tuple(n for n in OPTIONAL if (d / n).is_file())}
    _replace(d / MANIFEST, lambda p: p.write_text(json.dumps({"version": MANIFEST_VERSION, "files": files}, indent=2)))


def write_log(directory: str | Path, log: list[dict]) -> None:
    _replace(Path(directory) / LOG, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in log)))


def save_checkpoint(directory: str | Path, model, vocab: Vocabulary, model_config: ModelConfig,
                    train_config: TrainConfig | None, log: list[dict], extra: dict | None = None) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _replace(d / WEIGHTS, lambda p: save_file(_unique_tensors(model), str(p), metadata={"format": "pt"}))
    _replace(d / CONFIG, lambda p: save_json(p, model_config, train_config, extra))
    _replace(d / VOCAB, lambda p: vocab.save(p))
    write_log(d, log)
    write_manifest(d)


def write_extra(directory: str | Path, name: str, content: dict) -> None:
    """Write one of the OPTIONAL JSON files into a checkpoint and update the manifest."""
    if name not in OPTIONAL:
        raise ValueError(f"{name}: not a checkpoint file")
    d = Path(directory)
    _replace(d / name, lambda p: p.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n"))
    write_manifest(d)


def read_card(directory: str | Path) -> dict | None:
    """The checkpoint's card.json (None when it has none); a CheckpointError when it does not parse."""
    path = Path(directory) / CARD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def update_log(directory: str | Path, log: list[dict]) -> None:
    """Rewrite training_log.jsonl (and the manifest) of an existing checkpoint."""
    write_log(directory, log)
    write_manifest(directory)


def verify_manifest(directory: str | Path) -> None:
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"{d}: not a checkpoint directory")
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{d / MANIFEST}: missing; not a checkpoint directory") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{d / MANIFEST}: not valid JSON ({e})") from None
    if manifest.get("version") != MANIFEST_VERSION or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{d / MANIFEST}: unknown manifest version {manifest.get('version')!r}")
    listed = manifest["files"]
    for name in FILES:
        if name not in listed:
            raise CheckpointError(f"{d / MANIFEST}: does not list {name}")
    for name, digest in listed.items():
        path = d / name
        if Path(name).name != name or name == MANIFEST:
            raise CheckpointError(f"{d / MANIFEST}: bad file name {name!r}")
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the manifest but missing")
        if sha256_of(path) != digest:
            raise CheckpointError(f"{path}: sha256 does not match the manifest (modified or corrupted)")


def load_checkpoint(directory: str | Path, device="cpu"):
    """-> (model in eval mode on `device`, vocab, tokenizer, ModelConfig). Verifies the manifest first.
    The model's loss weights are those of the TrainConfig it was trained with (none if config.json has none)."""
    d = Path(directory)
    verify_manifest(d)
    try:
        model_config, train_config, _ = load_json(d / CONFIG)
        vocab = Vocabulary.load(d / VOCAB)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{d}: unreadable config.json or vocab.json ({e})") from None
    if model_config.vocab_size != len(vocab):
        raise CheckpointError(f"{d / CONFIG}: vocab_size {model_config.vocab_size} != {len(vocab)} tokens in vocab.json")
    model = PromptBart(model_config)
    if train_config is not None:
        model.loss_weights = LossWeights(**train_config.loss_weights())
    expected = set(_unique_tensors(model))  # tied aliases are loaded through their one stored name
    try:
        tensors = load_file(str(d / WEIGHTS))
    except (SafetensorError, OSError) as e:  # a safetensors header that does not parse
        raise CheckpointError(f"{d / WEIGHTS}: unreadable safetensors file ({e})") from None
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if not missing and not unexpected:
        try:
            model.load_state_dict(tensors, strict=False)
        except RuntimeError as e:  # shape mismatch
            raise CheckpointError(f"{d / WEIGHTS}: weights do not fit the config ({str(e)[:200]})") from None
    if missing or unexpected:
        raise CheckpointError(f"{d / WEIGHTS}: weights do not fit the config (missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(unexpected)[:3]})")
    # A diverged model (every tensor NaN) generated junk without an error; about 0.1 s for the base preset.
    broken = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        raise CheckpointError(f"{d / WEIGHTS}: {len(broken)} tensors hold NaN or infinite values ({broken[0]}, ...): "
                              f"the training diverged; train the model again")
    model.to(device).eval()
    return model, vocab, Tokenizer(vocab, model_config.mode), model_config


# ---- resume state (not part of the checkpoint) -------------------------------------------------
def resume_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    return out.with_name(out.name + ".resume")


def save_resume(out_dir: str | Path, state: dict) -> None:
    d = resume_dir(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    _replace(d / "state.pt", lambda p: torch.save(state, p))


def load_resume(out_dir: str | Path) -> dict | None:
    path = resume_dir(out_dir) / "state.pt"
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
