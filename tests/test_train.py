"""The trainer: a tiny run on toy data, resume after should_stop equals an uninterrupted run (bitwise on
CPU), early stopping, progress events; and the CLI on the MIMIC-III demo (slow)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BartConfig, BartModel

from promptehr.model.nn.checkpoint import FILES, MANIFEST, OPTIONAL, load_checkpoint, resume_dir
from promptehr.model.nn.config import train_config
from promptehr.model.training.train import train
from tests.test_vocab import toy_patients

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: torch on one thread


def config(**kw):
    return train_config("tiny", **{"epochs": 2, "batch_size": 8, "save_every": 3, "patience": 5, **kw})


def data():
    return toy_patients(36, seed=5), toy_patients(8, seed=6)


def strip(log):
    return [{k: v for k, v in line.items() if k != "seconds"} for line in log]


def test_resume_equals_uninterrupted(tmp_path):
    tr, va = data()
    a = train(tr, va, config(), tmp_path / "a", device="cpu")
    assert a.status == "completed" and a.steps == 10 and len(a.log) == 2
    calls = {"n": 0}

    def stop_after_seven():
        calls["n"] += 1
        return calls["n"] > 7

    b = train(tr, va, config(), tmp_path / "b", device="cpu", should_stop=stop_after_seven)
    assert b.status == "stopped" and b.steps == 7 and resume_dir(tmp_path / "b").is_dir()
    assert not any(p.suffix == ".pt" for p in (tmp_path / "b").iterdir())  # resume state stays outside
    c = train(tr, va, config(), tmp_path / "b", device="cpu", resume=True)
    assert c.status == "completed" and c.steps == 10
    assert not resume_dir(tmp_path / "b").exists()
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert strip(a.log) == strip(c.log)


def test_progress_early_stop_and_log(tmp_path):
    tr, va = data()
    events = []
    r = train(tr, va, config(epochs=6, patience=1, lr=0.0), tmp_path / "m", device="cpu", progress=events.append)
    assert r.status == "early_stopped" and r.epochs_run == 2 and r.best_epoch == 1  # lr 0: no improvement
    steps = [e for e in events if "event" not in e]
    assert {"step", "total_steps", "epoch", "loss", "lr"} <= set(steps[0])
    lines = [json.loads(x) for x in (tmp_path / "m" / "training_log.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    assert {"epoch", "step", "train_loss", "val_loss", "val_ppl", "baseline_ppl", "seconds", "train_lm_loss",
            "val_age_loss", "val_sex_loss", "val_cooc_loss", "val_token_acc", "val_code_acc"} <= set(lines[0])
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(FILES + OPTIONAL + (MANIFEST,))  # + card, population


def test_refuses_foreign_out_dir(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    tr, va = data()
    with pytest.raises(FileExistsError):
        train(tr, va, config(), tmp_path / "x", device="cpu")


@pytest.mark.slow
def test_cli_on_mimic3_demo(tmp_path, shared_data):
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "promptehr.cli", "train", "--data", str(shared_data / "mimic3-demo"), "--preset", "tiny",
           "--epochs", "3", "--device", "cpu", "--out", str(out)]
    run = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES + OPTIONAL + (MANIFEST,))
    lines = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and lines[-1]["val_loss"] < lines[0]["val_loss"]


def test_init_from_local_hf_bart(tmp_path):
    hf = BartModel(BartConfig(vocab_size=50, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                              decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128))
    hf.save_pretrained(tmp_path / "hf")
    tr, va = data()
    r = train(tr, va, config(epochs=1, init_from=str(tmp_path / "hf")), tmp_path / "m", device="cpu")
    m, vocab, _, cfg = load_checkpoint(tmp_path / "m")
    assert r.status == "completed" and cfg.d_model == 32 and cfg.encoder_layers == 1 and cfg.init_from == str(tmp_path / "hf")
    assert cfg.max_length == 128 - cfg.n_prompts and m.bart.shared.weight.shape[0] == len(vocab)
    assert m.bart.encoder.embed_tokens.weight.data_ptr() == m.bart.shared.weight.data_ptr()


def test_flat_mode_trains(tmp_path):
    tr, va = data()
    r = train(tr, va, config(epochs=1, mode="flat"), tmp_path / "m", device="cpu")
    _, _, tk, cfg = load_checkpoint(tmp_path / "m")
    assert r.status == "completed" and cfg.mode == "flat" and tk.mode == "flat" and r.log[0]["val_ppl"] > 0
