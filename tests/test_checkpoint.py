"""Checkpoint directory: exactly the five files, nothing pickled, loads back to the same model, and any
tampering or missing file is refused with a CheckpointError naming the file."""
import json
import struct

import pytest
import torch

from promptehr.model.nn.checkpoint import (
    FILES,
    MANIFEST,
    load_checkpoint,
    save_checkpoint,
    verify_manifest,
)
from promptehr.model.nn.config import model_config, train_config
from promptehr.model.errors import CheckpointError
from promptehr.model.nn.promptbart import PromptBart, demographics_to_tensors
from promptehr.model.tokens.vocab import BOS, EOS, Vocabulary
from tests.test_vocab import toy_patients


@pytest.fixture
def saved(tmp_path):
    v = Vocabulary.build(toy_patients(20))
    torch.manual_seed(0)
    cfg = model_config("tiny", vocab_size=len(v), code_offset=v.code_offset, age_mean=50.0, age_sd=15.0)
    m = PromptBart(cfg).eval()
    save_checkpoint(tmp_path / "ckpt", m, v, cfg, train_config("tiny"), [{"epoch": 1, "val_loss": 1.0}])
    return tmp_path / "ckpt", m, v


def test_files_and_no_pickle(saved):
    d, _, _ = saved
    assert sorted(p.name for p in d.iterdir()) == sorted(FILES + (MANIFEST,))
    raw = (d / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    json.loads(raw[8:8 + n])  # a safetensors header, not a pickle
    for name in FILES + (MANIFEST,):
        assert not (d / name).read_bytes().startswith(b"\x80"), name  # pickle protocol marker
    manifest = json.loads((d / MANIFEST).read_text())
    assert set(manifest["files"]) == set(FILES)


def test_round_trip(saved):
    d, m, v = saved
    m2, v2, tk, cfg = load_checkpoint(d)
    assert v2 == v and cfg == m.config and tk.mode == "hierarchical"
    age, sex = demographics_to_tensors([60, 30], ["F", "M"], cfg)
    ids = torch.tensor([[BOS, EOS]] * 2)
    with torch.no_grad():
        a = m(ids, None, ids[:, :1], None, age, sex).logits
        b = m2(ids, None, ids[:, :1], None, age, sex).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["model.safetensors", "vocab.json", "config.json", "training_log.jsonl"])
def test_tampered_file_is_refused(saved, name):
    d, _, _ = saved
    path = d / name
    data = bytearray(path.read_bytes())
    data[-2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(d)


def test_missing_file_and_bad_manifest(saved):
    d, _, _ = saved
    (d / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="vocab.json"):
        verify_manifest(d)
    (d / MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest.json"):
        verify_manifest(d)
    (d / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="manifest.json"):
        load_checkpoint(d)


SAVE_SCRIPT = """
import sys, torch
from promptehr.model.nn.checkpoint import save_checkpoint
from promptehr.model.nn.config import model_config
from promptehr.model.nn.promptbart import PromptBart
from promptehr.model.tokens.vocab import Vocabulary
from tests.test_vocab import toy_patients
v = Vocabulary.build(toy_patients(20))
torch.manual_seed(0)
cfg = model_config("tiny", vocab_size=len(v), code_offset=v.code_offset)
save_checkpoint(sys.argv[1], PromptBart(cfg), v, cfg, None, [])
"""


@pytest.mark.slow  # several Python processes, each importing torch and saving a model
def test_same_bytes_in_every_process(tmp_path):
    import hashlib
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    digests = []
    for seed in ("1", "2"):  # different string-hash seeds: set and dict orders differ between the processes
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-c", SAVE_SCRIPT, str(out)], cwd=repo, env=env, check=True)
        digests.append(hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
