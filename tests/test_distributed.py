"""Data-parallel training (model/training/distributed.py): 2 CPU processes on gloo give the losses of one
process on the same global batches, through a stop and a resume, and record world_size; a
`torchrun --nproc_per_node 2` run of the CLI on DE-SynPUF sample 1 writes a checkpoint that
`promptehr generate` loads and samples from."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from promptehr.model.data import load_patients
from promptehr.model.nn.config import train_config
from promptehr.model.split import split_patients
from promptehr.model.training.distributed import Context, shard
from promptehr.model.training.train import train

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STOP_AT = 3  # the 2-process run stops after this many steps and resumes


def config():
    # 65 training patients in batches of 16: each epoch ends on a batch of one row, which leaves rank 1
    # without rows (the zero-weight path)
    return train_config("tiny", epochs=2, batch_size=16, save_every=2, patience=5)


def patients(data_root: Path):
    train_set, val_set, _ = split_patients(load_patients([str(data_root / "mimic3-demo")]), 0)
    return train_set[:65], val_set


NO_DROPOUT = {"dropout": 0.0}  # dropout masks come from each rank's own stream; without it the losses agree


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world: int, port: int, data_root: str, out: str, losses_path: str) -> None:
    """One rank (torch.multiprocessing.spawn): train until step STOP_AT, then resume to the end."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        train_set, val_set = patients(Path(data_root))
        losses = []

        def progress(info):
            if "loss" in info:
                losses.append(info["loss"])

        first = train(train_set, val_set, config(), out, progress=progress, device="cpu", model_overrides=NO_DROPOUT,
                      should_stop=lambda: len(losses) >= STOP_AT)  # rank 0 alone sees progress: all must stop
        assert first.status == "stopped" and first.steps == STOP_AT
        final = train(train_set, val_set, config(), out, progress=progress, device="cpu", model_overrides=NO_DROPOUT,
                      resume=True)
        assert final.status == "completed"
        if rank == 0:
            Path(losses_path).write_text(json.dumps(losses))
    finally:
        dist.destroy_process_group()


def test_shard_takes_every_nth_row_and_pads_empty_ranks():
    idx = np.arange(5)
    assert shard(idx, Context(0, 2))[0].tolist() == [0, 2, 4]
    assert shard(idx, Context(1, 2))[0].tolist() == [1, 3]
    rows, counts = shard(np.array([7]), Context(1, 2))
    assert rows.tolist() == [7] and not counts


@pytest.mark.slow  # two gloo processes train (~25 s)
def test_two_gloo_processes_match_one_process_and_resume(tmp_path, shared_data):
    torch.set_num_threads(1)
    train_set, val_set = patients(shared_data)
    one = []
    single = train(train_set, val_set, config(), tmp_path / "one", device="cpu", model_overrides=NO_DROPOUT,
                   progress=lambda info: one.append(info["loss"]) if "loss" in info else None)
    losses_path = tmp_path / "losses.json"
    mp.spawn(rank_main, args=(2, free_port(), str(shared_data), str(tmp_path / "two"), str(losses_path)), nprocs=2)

    two = json.loads(losses_path.read_text())
    assert len(one) == len(two) == single.steps == 10
    np.testing.assert_allclose(two, one, rtol=2e-5, atol=1e-6)
    one_log = [json.loads(x) for x in (tmp_path / "one" / "training_log.jsonl").read_text().splitlines()]
    two_log = [json.loads(x) for x in (tmp_path / "two" / "training_log.jsonl").read_text().splitlines()]
    assert [x["world_size"] for x in two_log] == [2, 2] and all("world_size" not in x for x in one_log)
    for a, b in zip(one_log, two_log):
        for key in ("train_loss", "train_cooc_loss", "val_loss", "val_ppl"):
            assert b[key] == pytest.approx(a[key], rel=5e-5), key
    assert json.loads((tmp_path / "two" / "config.json").read_text())["train"]["world_size"] == 2
    assert "world_size" not in json.loads((tmp_path / "one" / "config.json").read_text())["train"]
    assert not (tmp_path / "two.resume").exists()


@pytest.mark.slow  # torchrun starts two training processes (~30 s)
def test_torchrun_checkpoint_loads_and_generates(tmp_path, shared_data):
    out = tmp_path / "model"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "promptehr.cli.main", "train",
         "--data", str(shared_data / "desynpuf-sample" / "1-sample-10000"), "--preset", "tiny", "--max-steps", "4",
         "--batch-size", "16", "--device", "cpu", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("completed:") == 1  # rank 0 alone reports
    assert json.loads((out / "config.json").read_text())["train"]["world_size"] == 2
    log = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]
    assert log and all(x["world_size"] == 2 for x in log) and log[-1]["step"] == 4

    cohort = tmp_path / "cohort.jsonl"
    gen = subprocess.run([str(BIN / "promptehr"), "generate", "--model", str(out), "--n", "20", "--seed", "1",
                          "--threads", "1", "--out", str(cohort)], env=env, capture_output=True, text=True, timeout=240, check=False)
    assert gen.returncode == 0, gen.stderr[-3000:]
    rows = [json.loads(x) for x in cohort.read_text().splitlines()]
    assert len(rows) == 20 and all(r["visits"] for r in rows)
