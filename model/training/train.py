"""The trainer: one function, `train`, used by the CLI and by the worker.

AdamW with linear warmup and linear decay, gradient clipping, bf16 autocast on CUDA only. Each epoch
ends with a validation pass on a fixed, deterministically corrupted validation set (loss, perplexity
over masked and next-visit codes, beside a unigram baseline) and writes one line of training_log.jsonl;
the best epoch's weights are the checkpoint; training stops early after `patience` epochs without
improvement.

Determinism and resume: the batch order of epoch e comes from a generator seeded by (seed, e) and each
example's corruption from (seed, e, patient index), so nothing depends on how far an earlier process
got. Resume state (weights, optimizer, scheduler, torch/numpy/python RNG states, epoch and step, log,
best so far) is written to `<out>.resume/` every `save_every` steps, at every epoch end and when
`should_stop()` asks; on CPU a resumed run ends bitwise equal to an uninterrupted one.
"""
from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.nn import checkpoint as ckpt
from model.training.batches import IGNORE, batch_order, collate
from model.nn.config import ModelConfig, TrainConfig, model_config
from model.nn.cooccurrence import common_pairs, count_cooccurrences, patient_visits
from model.tokens.layout import TokenLayout
from model.training.corruption import make_example
from model.training.perplexity import evaluate, unigram_logp, validation_batches
from model.nn.promptbart import LossWeights, PromptBart
from model.tokens.tokenizer import Tokenizer
from model.tokens.vocab import Vocabulary


@dataclass
class TrainResult:
    status: str  # "completed" | "early_stopped" | "stopped" (should_stop asked; resume state kept)
    out_dir: str
    epochs_run: int = 0
    steps: int = 0
    best_epoch: int | None = None
    best_val_loss: float | None = None
    seconds: float = 0.0
    log: list[dict] = field(default_factory=list)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(device)


# ---- setup: plain data in, plain data out ------------------------------------------------------
def age_stats(patients) -> tuple[float, float]:
    ages = np.array([p.age for p in patients], dtype=np.float64)
    if len(ages) == 0:
        return 0.0, 1.0
    sd = float(ages.std())
    return float(ages.mean()), sd if sd > 1e-6 else 1.0


def encode_patients(patients, tokenizer: Tokenizer, cfg: ModelConfig):
    """-> token lists, standardised ages, sexes (0/1); patients without visits are left out."""
    kept = [p for p in patients if p.visits]
    seqs = [tokenizer.encode(p.visits, cfg.max_length) for p in kept]
    ages = [(p.age - cfg.age_mean) / cfg.age_sd for p in kept]
    sexes = [0 if str(p.sex).upper() == "M" else 1 for p in kept]
    return seqs, ages, sexes


def build_model(cfg: ModelConfig, init_from: str | None = None) -> tuple[PromptBart, ModelConfig]:
    """Random weights, or BART weights from a local Hugging Face directory (dims come from its config;
    the token embeddings are new, since our tokens are diagnoses)."""
    if not init_from:
        return PromptBart(cfg), cfg
    from transformers import BartModel

    bart = BartModel.from_pretrained(init_from, local_files_only=True)
    hf = bart.config
    if hf.scale_embedding or hf.activation_function != "gelu" or hf.encoder_attention_heads != hf.decoder_attention_heads:
        raise ValueError(f"{init_from}: BART variant not supported (needs gelu, no embedding scaling, equal head counts)")
    cfg = ModelConfig.from_dict({**cfg.to_dict(), "d_model": hf.d_model, "encoder_layers": hf.encoder_layers,
                                 "decoder_layers": hf.decoder_layers, "attention_heads": hf.encoder_attention_heads,
                                 "ffn_dim": hf.encoder_ffn_dim, "init_from": str(init_from),
                                 "max_length": min(cfg.max_length, hf.max_position_embeddings - cfg.n_prompts)})
    bart.resize_token_embeddings(cfg.vocab_size)
    torch.nn.init.normal_(bart.shared.weight, std=hf.init_std)
    model = PromptBart(cfg, bart=bart)
    # positions beyond max_length + prompts are unused; keep BART's table as it is
    return model, cfg


def init_output_bias(model: PromptBart, seqs: list[list[int]]) -> None:
    """Start the output bias at the log frequency of each token in the training sequences (add-one): the
    untrained model then predicts the unigram distribution instead of a uniform one, and training spends
    its steps on context rather than on learning code frequencies."""
    counts = np.bincount(np.concatenate([np.asarray(s) for s in seqs]), minlength=model.config.vocab_size) + 1.0
    with torch.no_grad():
        model.final_logits_bias.copy_(torch.from_numpy(np.log(counts / counts.sum())).float())


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)


def make_scheduler(opt, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def epoch_batches(n: int, lengths, cfg: TrainConfig, epoch: int):
    return batch_order(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))


def train_batch(idx, seqs, ages, sexes, layout: TokenLayout, cfg: TrainConfig, epoch: int, common):
    examples = [make_example(seqs[i], np.random.default_rng([cfg.seed, epoch, int(i)]), layout, cfg) for i in idx]
    return collate(examples, [ages[i] for i in idx], [sexes[i] for i in idx], common, layout.code_offset)


# ---- RNG state, as tensors and plain values (torch.load(weights_only=True) can read it) ----------
def rng_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_out_dir(out: Path) -> None:
    if out.exists():
        extra = [p.name for p in out.iterdir() if p.name not in ckpt.FILES + (ckpt.MANIFEST,)]
        if extra:
            raise FileExistsError(f"{out}: exists and holds files that are not a checkpoint's ({extra[:3]})")


# ---- the trainer --------------------------------------------------------------------------------
def train(train_patients, val_patients, config: TrainConfig, out_dir, *, progress: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None, resume: bool = False, device="auto",
          model_overrides: dict | None = None) -> TrainResult:
    """Train PromptBart on `train_patients`, validate on `val_patients`, write the checkpoint to `out_dir`.

    progress(dict) gets {"step", "total_steps", "epoch" (1-based), "epochs", "loss", "lr", "tokens_per_s"} after each
    step and {"event": "epoch", ...the training_log line...} after each validation. should_stop() is polled
    before each step; when it returns True the resume state is saved and the result has status "stopped".
    """
    t_start = time.time()
    dev = resolve_device(device)
    out = Path(out_dir)
    state = ckpt.load_resume(out) if resume else None
    if resume and state is None and (out / ckpt.MANIFEST).exists():
        raise FileExistsError(f"{out}: nothing to resume (no {ckpt.resume_dir(out)}); the run had finished")
    if state is None:
        _check_out_dir(out)
        shutil.rmtree(ckpt.resume_dir(out), ignore_errors=True)

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)

    vocab = Vocabulary.build(train_patients, min_count=config.min_count)
    if state is not None and state["vocab"] != vocab.to_dict():
        raise ValueError("resume: the training data gives a different vocabulary than the interrupted run")
    mean, sd = age_stats(train_patients)
    mcfg = model_config(config.preset, vocab_size=len(vocab), code_offset=vocab.code_offset, mode=config.mode,
                        age_mean=mean, age_sd=sd, **(model_overrides or {}))
    model, mcfg = build_model(mcfg, config.init_from)
    model.loss_weights = LossWeights(config.age_weight, config.sex_weight, config.cooc_weight, config.label_smoothing)
    model.to(dev)
    tokenizer = Tokenizer(vocab, config.mode)
    layout = TokenLayout.of(vocab)

    seqs, ages, sexes = encode_patients(train_patients, tokenizer, mcfg)
    if not seqs:
        raise ValueError("no training patients with visits")
    lengths = [len(s) for s in seqs]
    init_output_bias(model, seqs)  # (a resumed run overwrites it with the saved weights)
    val_seqs, val_ages, val_sexes = encode_patients(val_patients, tokenizer, mcfg)
    if config.max_val_patients is not None:
        val_seqs, val_ages, val_sexes = (x[:config.max_val_patients] for x in (val_seqs, val_ages, val_sexes))
    common = None
    if config.cooc_weight > 0:
        common = common_pairs(count_cooccurrences(patient_visits(train_patients), vocab), config.cooc_threshold)
    val_set = validation_batches(val_seqs, val_ages, val_sexes, layout, config, config.batch_size, common)
    baseline = unigram_logp(vocab)

    steps_per_epoch = math.ceil(len(seqs) / config.batch_size)
    # Every objective's target is the whole record, so a batch has sum(len - 1) labels. The loss of a
    # step is its batch's token mean times labels / this mean: each token then weighs the same in every
    # batch. With a per-batch mean, batches are length-bucketed and short records (one visit: a stop)
    # got more weight per token than long ones (where records continue): the model said P(another
    # visit) 0.27 where the data says 0.43, and cohorts had 1.26 visits per patient for 1.75.
    labels_per_batch = (sum(lengths) - len(seqs)) / steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    opt = make_optimizer(model, config)
    # short runs: warmup capped at a tenth of the steps
    sched = make_scheduler(opt, min(config.warmup_steps, max(1, total_steps // 10)), total_steps)

    epoch, step_in_epoch, step = 0, 0, 0
    log: list[dict] = []
    best = {"val_loss": None, "epoch": None, "bad_epochs": 0}
    run_sums = {"loss": 0.0, "lm": 0.0, "age": 0.0, "sex": 0.0, "cooc": 0.0, "n": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        epoch, step_in_epoch, step = state["epoch"], state["step_in_epoch"], state["step"]
        log, best, run_sums = list(state["log"]), dict(state["best"]), dict(state["run_sums"])
        set_rng_state(state["rng"])

    def snapshot() -> None:
        ckpt.save_resume(out, {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "epoch": epoch, "step_in_epoch": step_in_epoch, "step": step, "log": log, "best": best,
            "run_sums": run_sums, "rng": rng_state(), "vocab": vocab.to_dict(), "train_config": config.to_dict(),
        })

    def result(status: str) -> TrainResult:
        return TrainResult(status, str(out), len(log), step, best["epoch"], best["val_loss"], time.time() - t_start, log)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    model.train()
    status = "completed"
    t_epoch, tokens_seen, t_rate = time.time(), 0, time.time()
    while epoch < config.epochs and step < total_steps:
        order = epoch_batches(len(seqs), lengths, config, epoch)
        while step_in_epoch < len(order) and step < total_steps:
            if should_stop is not None and should_stop():
                snapshot()
                return result("stopped")
            batch = train_batch(order[step_in_epoch], seqs, ages, sexes, layout, config, epoch, common).to(dev)
            with autocast:
                outp = model(**batch.model_inputs())
            (outp.loss * (int((batch.labels != IGNORE).sum()) / labels_per_batch)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            step_in_epoch += 1
            tokens_seen += batch.n_tokens
            for k, v in (("loss", outp.loss), ("lm", outp.lm_loss), ("age", outp.age_loss), ("sex", outp.sex_loss), ("cooc", outp.cooc_loss)):
                run_sums[k] += float(v.detach())
            run_sums["n"] += 1
            if progress is not None:
                progress({"step": step, "total_steps": total_steps, "epoch": epoch + 1, "epochs": config.epochs,
                          "loss": float(outp.loss.detach()), "lr": sched.get_last_lr()[0],
                          "tokens_per_s": tokens_seen / max(time.time() - t_rate, 1e-9)})
            if config.save_every and step % config.save_every == 0 and step_in_epoch < len(order):
                snapshot()

        # ---- epoch end (or max_steps reached): validate, log, keep the best ----
        metrics = evaluate(model, val_set, baseline, dev, vocab.code_category if tokenizer.hierarchical else None) \
            if val_set else {}
        n = max(run_sums["n"], 1)
        line = {"epoch": epoch + 1, "step": step, "train_loss": run_sums["loss"] / n, "train_lm_loss": run_sums["lm"] / n,
                "train_age_loss": run_sums["age"] / n, "train_sex_loss": run_sums["sex"] / n,
                "train_cooc_loss": run_sums["cooc"] / n, **metrics, "seconds": round(time.time() - t_epoch, 3)}
        log.append(line)
        val_loss = metrics.get("val_loss", line["train_loss"])
        improved = best["val_loss"] is None or val_loss < best["val_loss"]
        if improved:
            best = {"val_loss": val_loss, "epoch": epoch + 1, "bad_epochs": 0}
            ckpt.save_checkpoint(out, model, vocab, mcfg, config, log,
                                 extra={"best": {"epoch": epoch + 1, "step": step, "val_loss": val_loss}})
        else:
            best["bad_epochs"] += 1
            ckpt.update_log(out, log)
        if progress is not None:
            progress({"event": "epoch", "epochs": config.epochs, "total_steps": total_steps, **line})
        epoch += 1
        step_in_epoch = 0
        run_sums = {"loss": 0.0, "lm": 0.0, "age": 0.0, "sex": 0.0, "cooc": 0.0, "n": 0}
        t_epoch = time.time()
        if best["bad_epochs"] >= config.patience:
            status = "early_stopped"
            break
        if epoch < config.epochs and step < total_steps:
            snapshot()

    shutil.rmtree(ckpt.resume_dir(out), ignore_errors=True)
    return result(status)
