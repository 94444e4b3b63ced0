"""The trainer: one function, `train`, used by the CLI and by the worker.

AdamW with linear warmup and linear decay, gradient clipping, bf16 autocast on CUDA only. Each epoch
ends with a validation pass on a fixed, deterministically corrupted validation set (loss, perplexity
over masked and next-visit codes, beside a unigram baseline) and writes one line of training_log.jsonl;
the best epoch's weights are the checkpoint; training stops early after `patience` epochs without
improvement.

Determinism and resume: the batch order of epoch e comes from a generator seeded by (seed, e) and each
example's corruption from (seed, e, patient index), so nothing depends on how far an earlier process
got. Resume state (weights, optimizer, scheduler, torch/numpy/python RNG states, epoch and step, log,
best so far; model/training/state.py) is written to `<out>.resume/` every `save_every` steps, at every
epoch end and when `should_stop()` asks; on CPU a resumed run ends bitwise equal to an uninterrupted one.

Data parallelism (N processes under torchrun or `promptehr train --nproc N`) lives in
model/training/distributed.py: each rank takes its share of every global batch, rank 0 validates and
writes; one process without a launch runs exactly the code it ran before.

Reading order: `train` and its loop, then the steps `run_epoch`, `train_step`, `validate`, `snapshot`, then
the setup that builds the run (`Run`: what training reads and never changes) and its first state.
"""
from __future__ import annotations

import math
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from promptehr.model.errors import TrainingError
from promptehr.model.nn import checkpoint as ckpt
from promptehr.model.nn.config import ModelConfig, TrainConfig, model_config
from promptehr.model.nn.cooccurrence import common_pairs, count_cooccurrences, patient_visits
from promptehr.model.nn.promptbart import LossWeights
from promptehr.model.tokens.layout import TokenLayout
from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.tokens.vocab import TimeTokens, Vocabulary
from promptehr.model.training import card, distributed
from promptehr.model.training.batches import IGNORE, Batch
from promptehr.model.training.perplexity import (
    autocast,
    evaluate,
    unigram_logp,
    validation_batches,
)
from promptehr.model.training.prepare import (
    age_stats,
    build_model,
    check_demographics,
    encode_patients,
    epoch_batches,
    init_output_bias,
    make_optimizer,
    make_scheduler,
    resolve_device,
    train_batch,
)
from promptehr.model.training.state import TrainingState


@dataclass
class TrainResult:
    status: str  # "completed" | "early_stopped" | "time_budget" | "stopped" (should_stop asked; resume state kept)
    out_dir: str
    epochs_run: int = 0
    steps: int = 0
    best_epoch: int | None = None
    best_val_loss: float | None = None
    seconds: float = 0.0
    log: list[dict] = field(default_factory=list)
    card: dict | None = None  # the checkpoint's card.json (model/training/card.py); None when stopped


@dataclass
class Run:
    """What a training run reads and never changes."""
    config: TrainConfig
    out: Path
    device: torch.device
    vocab: Vocabulary
    model_config: ModelConfig
    layout: TokenLayout
    seqs: list[list[int]]  # encoded training patients, with their standardised ages and sexes (0/1)
    ages: list[float]
    sexes: list[int]
    lengths: list[int]
    common: sp.csr_matrix | None  # within-visit code pairs seen often enough (None: co-occurrence weight 0)
    val_set: list[tuple[str, Batch]]
    baseline: torch.Tensor  # (V,) unigram log-probabilities
    code_category: np.ndarray | None  # hierarchical mode: the category token of each code (None: flat)
    total_steps: int
    labels_per_batch: float
    progress: Callable[[dict], None] | None  # (rank 0 only)
    started: float  # time.time() when train() was called
    ctx: distributed.Context  # this process's rank and the world size (SINGLE: one process)
    forward: torch.nn.Module  # what the forward pass calls: the model, or its DDP wrapper
    config_record: object  # config.json's train section: the config (+ world_size when above 1)


def train(train_patients, val_patients, config: TrainConfig, out_dir, *, progress: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None, resume: bool = False, device="auto",
          model_overrides: dict | None = None, time_budget: float | None = None, holdout=None,
          source: dict | None = None) -> TrainResult:
    """Train PromptBart on `train_patients`, validate on `val_patients`, write the checkpoint to `out_dir`.

    progress(dict) gets {"step", "total_steps", "epoch" (1-based), "epochs", "loss", "lr", "tokens_per_s"} after each
    step and {"event": "epoch", ...the training_log line...} after each validation. should_stop() is polled
    before each step; when it returns True the resume state is saved and the result has status "stopped".
    time_budget (seconds from the call): after each epoch, no further epoch starts that would end past it at
    the pace of the last one, and an epoch still running at the budget ends there (after at least one step)
    and is validated on what it trained; stopping so gives status "time_budget".
    At the end (any status but "stopped") rank 0 writes population.json and card.json into the checkpoint
    (model/training/card.py): held-out perplexity and a check cohort on `holdout` (default: the validation
    split), with `source` ({"format", "paths"}) as the card's data source.
    """
    started = time.time()
    out = Path(out_dir)
    check_demographics(train_patients, "training split")
    check_demographics(val_patients, "validation split")
    with distributed.session(resolve_device(device)) as (ctx, dev):
        saved = resume_state_or_fresh_dir(out, resume, ctx)
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        run, st = setup(train_patients, val_patients, config, out, dev, model_overrides, saved,
                        progress if ctx.main else None, started, ctx)
        distributed.seed_rank(ctx, config.seed, saved)
        res = loop(run, st, should_stop, time_budget)
        if ctx.main and res.status != "stopped" and res.best_epoch is not None:
            heldout, name = (holdout, "holdout") if holdout is not None else (list(val_patients), "validation")
            res.card = card.finish(out, train_patients, heldout, name, res, config, source, dev)
        distributed.barrier(ctx)  # every rank returns once rank 0's checkpoint is written
        return res


def loop(run: Run, st: TrainingState, should_stop: Callable[[], bool] | None, time_budget: float | None = None) -> TrainResult:
    """Epochs until the step budget, `patience` epochs without improvement, the time budget, or should_stop()."""
    config = run.config
    st.model.train()
    status = "completed"
    while steps_left(run, st):
        ended = run_epoch(run, st, should_stop, time_budget)
        if ended == "stopped":
            snapshot(run, st)
            return result(run, st, "stopped")
        validate(run, st)
        st.next_epoch()
        if st.best["bad_epochs"] >= config.patience:
            status = "early_stopped"
            break
        if ended == "time_budget" or (steps_left(run, st) and out_of_time(run, time_budget, st.log[-1]["seconds"])):
            status = "time_budget"
            break
        if steps_left(run, st):
            snapshot(run, st)
    if run.ctx.main:
        shutil.rmtree(ckpt.resume_dir(run.out), ignore_errors=True)
    return result(run, st, status)


# ---- the steps of the loop ------------------------------------------------------------------------
def steps_left(run: Run, st: TrainingState) -> bool:
    return st.epoch < run.config.epochs and st.step < run.total_steps


def out_of_time(run: Run, time_budget: float | None, ahead: float) -> bool:
    """Would `ahead` more seconds end past the time budget? (every rank takes rank 0's answer)"""
    if time_budget is None:
        return False
    return distributed.any_rank(run.ctx, run.ctx.main and time.time() - run.started + ahead > time_budget)


def run_epoch(run: Run, st: TrainingState, should_stop: Callable[[], bool] | None, time_budget: float | None = None) -> str:
    """The rest of epoch st.epoch, up to the step budget: "done"; "stopped" as soon as should_stop() asks to
    stop; "time_budget" when the budget runs out mid-epoch (an epoch slower than the last, or a first one
    longer than the whole budget)."""
    order = epoch_batches(len(run.seqs), run.lengths, run.config, st.epoch)
    every = run.config.save_every
    while st.step_in_epoch < len(order) and st.step < run.total_steps:
        if distributed.any_rank(run.ctx, should_stop is not None and should_stop()):
            return "stopped"
        if st.step_in_epoch and out_of_time(run, time_budget, 0.0):
            return "time_budget"
        train_step(run, st, order[st.step_in_epoch])
        if every and st.step % every == 0 and st.step_in_epoch < len(order):  # (epoch ends snapshot anyway)
            snapshot(run, st)
    return "done"


def train_step(run: Run, st: TrainingState, idx) -> None:
    """One optimizer step on the batch of patients `idx`; adds its losses to the epoch's sums."""
    cfg = run.config
    if run.ctx.parallel:
        def build(rows):
            return train_batch(rows, run.seqs, run.ages, run.sexes, run.layout, cfg, st.epoch, run.common)
        losses, n_tokens = distributed.forward_backward(run.forward, st.model, build, idx, run.labels_per_batch,
                                                        run.ctx, run.device)
    else:
        losses, n_tokens = forward_backward(run, st, idx)
    torch.nn.utils.clip_grad_norm_(st.model.parameters(), cfg.grad_clip)
    st.opt.step()
    st.sched.step()
    st.opt.zero_grad(set_to_none=True)
    st.step += 1
    st.step_in_epoch += 1
    st.tokens_seen += n_tokens
    for k, v in losses.items():
        st.run_sums[k] += v
    st.run_sums["n"] += 1
    if run.progress is not None:
        run.progress({"step": st.step, "total_steps": run.total_steps, "epoch": st.epoch + 1, "epochs": cfg.epochs,
                      "loss": losses["loss"], "lr": st.sched.get_last_lr()[0],
                      "tokens_per_s": st.tokens_seen / max(time.time() - st.t_rate, 1e-9)})


def forward_backward(run: Run, st: TrainingState, idx) -> tuple[dict[str, float], int]:
    """One process: forward and backward on the batch of patients `idx` -> (its losses, its tokens)."""
    batch = train_batch(idx, run.seqs, run.ages, run.sexes, run.layout, run.config, st.epoch, run.common).to(run.device)
    with autocast(run.device):
        outp = st.model(**batch.model_inputs())
    # Every objective's target is the whole record, so a batch has sum(len - 1) labels. The loss of a
    # step is its batch's token mean times labels / this mean: each token then weighs the same in every
    # batch. With a per-batch mean, batches are length-bucketed and short records (one visit: a stop)
    # got more weight per token than long ones (where records continue): the model said P(another
    # visit) 0.27 where the data says 0.43, and cohorts had 1.26 visits per patient for 1.75.
    (outp.loss * (int((batch.labels != IGNORE).sum()) / run.labels_per_batch)).backward()
    losses = {k: float(v.detach()) for k, v in (("loss", outp.loss), ("lm", outp.lm_loss), ("age", outp.age_loss),
                                                 ("sex", outp.sex_loss), ("cooc", outp.cooc_loss))}
    return losses, batch.n_tokens


def validate(run: Run, st: TrainingState) -> None:
    """Epoch end (or the step or time budget reached): validation, the training_log line, and the checkpoint when
    this epoch is the best so far (else one more epoch without improvement)."""
    metrics = distributed.from_main(  # rank 0 validates; every rank takes the same best/patience decision
        run.ctx, lambda: evaluate(st.model, run.val_set, run.baseline, run.device, run.code_category) if run.val_set else {})
    sums, n, epoch = st.run_sums, max(st.run_sums["n"], 1), st.epoch + 1
    line = {"epoch": epoch, "step": st.step, "train_loss": sums["loss"] / n, "train_lm_loss": sums["lm"] / n,
            "train_age_loss": sums["age"] / n, "train_sex_loss": sums["sex"] / n,
            "train_cooc_loss": sums["cooc"] / n, **metrics, "seconds": round(time.time() - st.t_epoch, 3)}
    if run.ctx.parallel:  # absent: one process
        line["world_size"] = run.ctx.world_size
    st.log.append(line)
    val_loss = metrics.get("val_loss", line["train_loss"])
    if not (math.isfinite(line["train_loss"]) and math.isfinite(val_loss)):
        # A NaN model used to be saved as the best (nothing compares below NaN) and generated junk.
        kept = f"; the checkpoint of epoch {st.best['epoch']} is kept" if st.best["val_loss"] is not None else \
            "; no checkpoint was written"
        raise TrainingError(f"training diverged: train_loss {line['train_loss']}, val_loss {val_loss} at epoch {epoch} "
                            f"(step {st.step}){kept}")
    if st.best["val_loss"] is None or val_loss < st.best["val_loss"]:
        st.best = {"val_loss": val_loss, "epoch": epoch, "bad_epochs": 0}
        if run.ctx.main:
            ckpt.save_checkpoint(run.out, st.model, run.vocab, run.model_config, run.config_record, st.log,
                                 extra={"best": {"epoch": epoch, "step": st.step, "val_loss": val_loss}})
    else:
        st.best["bad_epochs"] += 1
        if run.ctx.main:
            ckpt.update_log(run.out, st.log)
    if run.progress is not None:
        run.progress({"event": "epoch", "epochs": run.config.epochs, "total_steps": run.total_steps, **line})


def snapshot(run: Run, st: TrainingState) -> None:
    """Write the resume state to `<out>.resume/` (the checkpoint itself changes only in `validate`); rank 0
    writes it, with every rank's RNG state."""
    state = distributed.with_rank_rngs(st.resume_state(run.vocab, run.config), run.ctx)
    if run.ctx.main:
        ckpt.save_resume(run.out, state)


def result(run: Run, st: TrainingState, status: str) -> TrainResult:
    return TrainResult(status, str(run.out), len(st.log), st.step, st.best["epoch"], st.best["val_loss"],
                       time.time() - run.started, st.log)


# ---- setup: the run and its first state -----------------------------------------------------------
def resume_state_or_fresh_dir(out: Path, resume: bool, ctx: distributed.Context = distributed.SINGLE) -> dict | None:
    """The interrupted run's resume state when resuming (every rank reads it); otherwise None, after checking
    that `out` holds nothing but a checkpoint and (rank 0) dropping a stale `<out>.resume/`."""
    saved = ckpt.load_resume(out) if resume else None
    if resume and saved is None and (out / ckpt.MANIFEST).exists():
        raise FileExistsError(f"{out}: nothing to resume (no {ckpt.resume_dir(out)}); the run had finished")
    if saved is None:
        if out.exists():
            extra = [p.name for p in out.iterdir() if p.name not in ckpt.FILES + ckpt.OPTIONAL + (ckpt.MANIFEST,)]
            if extra:
                raise FileExistsError(f"{out}: exists and holds files that are not a checkpoint's ({extra[:3]})")
        if ctx.main:
            shutil.rmtree(ckpt.resume_dir(out), ignore_errors=True)
            for name in ckpt.OPTIONAL:  # the previous model's card and population are not this one's
                (out / name).unlink(missing_ok=True)
        distributed.barrier(ctx)  # no rank starts (and snapshots) before the stale state is gone
    return saved


def setup(train_patients, val_patients, config: TrainConfig, out: Path, dev: torch.device, model_overrides,
          saved: dict | None, progress, started: float,
          ctx: distributed.Context = distributed.SINGLE) -> tuple[Run, TrainingState]:
    """Vocabulary, model, encoded data, optimizer and schedule (in this order: the model's initialisation
    is what draws from the seeded RNGs), then the first state: a fresh one, or `saved`."""
    time_tokens, why = TimeTokens.of(train_patients) if config.time else (None, "training asked for no time (time=False)")
    if config.time and time_tokens is None and ctx.main:
        warnings.warn(f"the model learns no timeline: {why}", stacklevel=2)
    vocab = Vocabulary.build(train_patients, min_count=config.min_count, time=time_tokens)
    if saved is not None and saved["vocab"] != vocab.to_dict():
        raise ValueError("resume: the training data gives a different vocabulary than the interrupted run")
    mean, sd = age_stats(train_patients)
    mcfg = model_config(config.preset, vocab_size=len(vocab), code_offset=vocab.code_offset, mode=config.mode,
                        time_offset=vocab.gap_offset, n_gaps=vocab.n_gaps, n_stays=vocab.n_stays,
                        age_mean=mean, age_sd=sd, **(model_overrides or {}))
    model, mcfg = build_model(mcfg, config.init_from)
    model.loss_weights = LossWeights(**config.loss_weights())
    model.to(dev)
    tokenizer = Tokenizer(vocab, config.mode)
    layout = TokenLayout.of(vocab)

    seqs, ages, sexes = encode_patients(train_patients, tokenizer, mcfg)
    if not seqs:
        raise ValueError("no training patients with visits")
    init_output_bias(model, seqs)  # (a resumed run overwrites it with the saved weights)
    common = None
    if config.cooc_weight > 0:
        common = common_pairs(count_cooccurrences(patient_visits(train_patients), vocab), config.cooc_threshold)
    total_steps, labels_per_batch = step_budget(seqs, config)
    run = Run(config=config, out=out, device=dev, vocab=vocab, model_config=mcfg, layout=layout, seqs=seqs, ages=ages,
              sexes=sexes, lengths=[len(s) for s in seqs], common=common,
              val_set=validation_set(val_patients, tokenizer, mcfg, layout, config, common),
              baseline=unigram_logp(vocab), code_category=vocab.code_category if tokenizer.hierarchical else None,
              total_steps=total_steps, labels_per_batch=labels_per_batch, progress=progress, started=started,
              ctx=ctx, forward=distributed.wrap(model, ctx, dev), config_record=distributed.recorded_config(config, ctx))

    opt = make_optimizer(model, config)
    # short runs: warmup capped at a tenth of the steps
    sched = make_scheduler(opt, min(config.warmup_steps, max(1, total_steps // 10)), total_steps)
    st = TrainingState(model, opt, sched) if saved is None else TrainingState.resumed(model, opt, sched, saved)
    return run, st


def validation_set(val_patients, tokenizer: Tokenizer, mcfg: ModelConfig, layout: TokenLayout, config: TrainConfig,
                   common) -> list[tuple[str, Batch]]:
    """The fixed validation batches (at most config.max_val_patients patients; corruption seeded by val_seed)."""
    val_seqs, val_ages, val_sexes = encode_patients(val_patients, tokenizer, mcfg)
    if config.max_val_patients is not None:
        val_seqs, val_ages, val_sexes = (x[:config.max_val_patients] for x in (val_seqs, val_ages, val_sexes))
    return validation_batches(val_seqs, val_ages, val_sexes, layout, config, config.batch_size, common)


def step_budget(seqs: list[list[int]], config: TrainConfig) -> tuple[int, float]:
    """-> (total optimizer steps, mean labels per batch: what a step's loss is scaled against)."""
    steps_per_epoch = math.ceil(len(seqs) / config.batch_size)
    labels_per_batch = (sum(len(s) for s in seqs) - len(seqs)) / steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    return total_steps, labels_per_batch
