"""Data-parallel training on torch.distributed: DistributedDataParallel over gloo (CPU) or NCCL (CUDA).

A run of N processes trains on the same global batches as one process: every rank builds the epoch's
batch order from the same seed, takes every N-th row of each global batch (rows r, r+N, ...: the batch is
length-sorted, so the ranks get similar lengths and padding), and DDP averages the gradients. Each rank's
loss is weighted so that the average of the ranks' gradients is the gradient of the one-process loss of
the global batch (see `forward_backward`), so N processes give the losses of one within float tolerance
(tests/test_distributed.py) — except for dropout, whose masks each rank draws from its own torch stream.

Rank 0 validates (the others receive its figures, so all take the same early-stopping decision), writes
the checkpoint, the training log and the resume state (holding every rank's RNG state); all ranks load the
resume state. config.json's train section and every training_log.jsonl line record `world_size` when it
is above 1; absent means 1 (so single-process checkpoints keep the bytes they had before this module).

Launch with `torchrun --nproc_per_node N -m cli.main train ...` or `promptehr train --nproc N` (`launch`
below: torch.distributed.run's API, the same agent torchrun starts). train() joins the process group the
environment describes (RANK, WORLD_SIZE, MASTER_ADDR, ... as torchrun sets them) or one already
initialised by the caller.
"""
from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.nn.parallel import DistributedDataParallel

from promptehr.model.nn.config import TrainConfig
from promptehr.model.training.batches import IGNORE, Batch
from promptehr.model.training.perplexity import autocast
from promptehr.model.training.state import rng_state, set_rng_state


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Context()


def env_rank() -> int:
    """This process's rank as torchrun's environment gives it (0 outside a launch)."""
    return int(os.environ.get("RANK", "0"))


@contextmanager
def session(device: torch.device) -> Iterator[tuple[Context, torch.device]]:
    """-> (context, this rank's device). Joins the process group the environment describes when none is
    initialised yet (and leaves it at the end); one process without a launch is SINGLE, untouched."""
    owned = not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized() or dist.get_world_size() == 1:
        yield SINGLE, device
        return
    if device.type == "cuda":  # one GPU per rank
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", dist.get_rank() % torch.cuda.device_count())))
        torch.cuda.set_device(device)
    try:
        yield Context(dist.get_rank(), dist.get_world_size()), device
    finally:
        if owned:
            dist.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: Context, device: torch.device) -> torch.nn.Module:
    """The module training calls forward on: the model itself, or its DDP wrapper (which all-reduces the
    gradients during backward). Buffers are not broadcast per step: every rank computes the same ones."""
    if not ctx.parallel:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def shard(idx, ctx: Context) -> tuple[np.ndarray, bool]:
    """This rank's rows of the global batch `idx`, and whether they count. A global batch smaller than
    the world (an epoch's last one) leaves some ranks without rows: they run row 0 with weight 0,
    since every rank must take part in the gradient all-reduce."""
    idx = np.asarray(idx)
    rows = idx[ctx.rank::ctx.world_size]
    return (rows, True) if len(rows) else (idx[:1], False)


def forward_backward(ddp: torch.nn.Module, model, build: Callable[[np.ndarray], Batch], idx, labels_per_batch: float,
                     ctx: Context, device: torch.device) -> tuple[dict[str, float], int]:
    """One rank's share of a step on the global batch `idx` -> (the global batch's losses, its tokens).

    One process backpropagates loss_g * labels_g / labels_per_batch, where loss_g = lm + a*age + s*sex
    (means over the batch's labels) + c*cooc (a mean over its co-occurrence positions). Rank r's part of
    that is labels_r / labels_per_batch * (lm_r + a*age_r + s*sex_r + c*(P_r/P_g)/(labels_r/labels_g)*cooc_r);
    DDP divides the sum of the ranks' gradients by N, so each rank backpropagates N times its part.
    """
    rows, counts = shard(idx, ctx)
    batch = build(rows).to(device)
    n_labels = int((batch.labels != IGNORE).sum())
    n_pos = batch.cooc.positions.numel() if batch.cooc is not None else 0
    local = torch.tensor([n_labels, n_pos], dtype=torch.float64, device=device) * float(counts)
    total = local.clone()
    dist.all_reduce(total)
    share_labels, share_pos = (local / total.clamp_min(1)).tolist()
    base = model.loss_weights
    if counts:
        model.loss_weights = dataclasses.replace(base, cooc=base.cooc * share_pos / share_labels)
    try:
        with autocast(device):
            outp = ddp(**batch.model_inputs())
        (outp.loss * (ctx.world_size * local[0].item() / labels_per_batch)).backward()
    finally:
        model.loss_weights = base
    parts = torch.tensor([share_labels * float(outp.lm_loss), share_labels * float(outp.age_loss),
                          share_labels * float(outp.sex_loss), share_pos * float(outp.cooc_loss),
                          batch.n_tokens * float(counts)], dtype=torch.float64, device=device)
    dist.all_reduce(parts)
    lm, age, sex, cooc, tokens = parts.tolist()
    loss = lm + base.age * age + base.sex * sex + base.cooc * cooc
    return {"loss": loss, "lm": lm, "age": age, "sex": sex, "cooc": cooc}, int(tokens)


def any_rank(ctx: Context, flag: bool) -> bool:
    """True on every rank when any rank says True (should_stop: all ranks must stop at the same step)."""
    if not ctx.parallel:
        return flag
    t = torch.tensor([int(flag)], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(ctx: Context, fn: Callable[[], object]):
    """fn() computed on rank 0 and received by every rank (validation figures)."""
    if not ctx.parallel:
        return fn()
    box = [fn() if ctx.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: Context) -> None:
    if ctx.parallel:
        dist.barrier()


def with_rank_rngs(state: dict, ctx: Context) -> dict:
    """A resume state plus the RNG states of ranks 1.. (a collective: every rank calls it at the same step)."""
    if not ctx.parallel:
        return state
    states = [None] * ctx.world_size
    dist.all_gather_object(states, rng_state())
    return {**state, "world_size": ctx.world_size, "rank_rng": states[1:]}


def seed_rank(ctx: Context, seed: int, saved: dict | None) -> None:
    """Ranks above 0 draw dropout from their own torch stream: the saved one when resuming (and saved by a
    run as wide), else one seeded by (seed, rank). Rank 0 keeps the stream one process would have."""
    if not ctx.parallel or ctx.main:
        return
    saved_rngs = (saved or {}).get("rank_rng", [])
    if ctx.rank - 1 < len(saved_rngs):
        set_rng_state(saved_rngs[ctx.rank - 1])
    else:
        torch.manual_seed(int(np.random.SeedSequence([seed, ctx.rank]).generate_state(1)[0]))


@dataclass(frozen=True)
class RecordedConfig:
    """config.json's train section of a data-parallel run: the TrainConfig plus world_size
    (TrainConfig.from_dict ignores the extra key, so the checkpoint loads as any other)."""
    config: TrainConfig
    world_size: int

    def to_dict(self) -> dict:
        return {**self.config.to_dict(), "world_size": self.world_size}


def recorded_config(config: TrainConfig, ctx: Context):
    return RecordedConfig(config, ctx.world_size) if ctx.parallel else config


def launch(nproc: int, entrypoint: Callable, *args):
    """Run entrypoint(*args) in `nproc` local processes under torch.distributed.run's agent (what
    `torchrun --standalone --nproc_per_node N` does) -> {rank: return value}. No restarts: a failed
    training is reported, not retried."""

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    return elastic_launch(config, entrypoint)(*args)


def _comm_device() -> torch.device:
    """NCCL talks through CUDA tensors, gloo through CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
