"""The trainer's parts, plain data in and out: the device, encoded patients, the model, its optimizer and
learning-rate schedule, and the batches of an epoch. model/training/train.py puts them together;
bench/bench_train.py times them."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from transformers import BartModel

from promptehr.model.errors import DataError
from promptehr.model.nn.config import ModelConfig, TrainConfig
from promptehr.model.nn.promptbart import PromptBart
from promptehr.model.tokens.layout import TokenLayout
from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.training.batches import Batch, batch_order, collate
from promptehr.model.training.corruption import make_example


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(device)


def age_stats(patients) -> tuple[float, float]:
    ages = np.array([p.age for p in patients], dtype=np.float64)
    if len(ages) == 0:
        return 0.0, 1.0
    sd = float(ages.std())
    return float(ages.mean()), sd if sd > 1e-6 else 1.0


SEXES = ("M", "F")


def check_demographics(patients, source: str = "training split") -> None:
    """The prompts need every patient's age and sex: a patient without an age (NaN: the data has no age
    column, or an empty one) made every weight NaN, and a sex other than M/F was taken for F. A DataError
    naming the first such patient, before anything is trained."""
    for p in patients:
        if not np.isfinite(p.age):
            raise DataError(source, f"patient {p.id!r} has no age: expected an age in years for every patient "
                                  f"(train with a default age, CLI --default-age, if the data has none)")
        if p.sex not in SEXES:
            raise DataError(source, f"patient {p.id!r} has sex {p.sex!r}: expected M or F "
                                  f"(train with a default sex, CLI --default-sex, if the data has none)")


def fill_demographics(patients, age: float | None = None, sex: str | None = None) -> list:
    """The patients with a missing age (NaN) set to `age` and an unknown sex ("U") set to `sex`, where given."""
    def filled(p):
        a = age if age is not None and not np.isfinite(p.age) else p.age
        s = sex if sex is not None and p.sex not in SEXES else p.sex
        return replace(p, age=a, sex=s) if (a is not p.age or s is not p.sex) else p

    return [filled(p) for p in patients]


def encode_patients(patients, tokenizer: Tokenizer, cfg: ModelConfig):
    """-> token lists, standardised ages, sexes (0/1); patients without visits are left out."""
    kept = [p for p in patients if p.visits]
    seqs = [tokenizer.encode_patient(p, cfg.max_length) for p in kept]
    ages = [(p.age - cfg.age_mean) / cfg.age_sd for p in kept]
    sexes = [SEXES.index(p.sex) for p in kept]  # 0 = M, 1 = F; anything else was refused by check_demographics
    return seqs, ages, sexes


def build_model(cfg: ModelConfig, init_from: str | None = None) -> tuple[PromptBart, ModelConfig]:
    """Random weights, or BART weights from a local Hugging Face directory (dims come from its config;
    the token embeddings are new, since our tokens are diagnoses)."""
    if not init_from:
        return PromptBart(cfg), cfg
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
    """Linear warmup over `warmup` steps, then linear decay to 0 at step `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def epoch_batches(n: int, lengths, cfg: TrainConfig, epoch: int):
    """Epoch `epoch`'s batches (arrays of patient indices), from a generator seeded by (seed, epoch)."""
    return batch_order(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))


def train_batch(idx, seqs, ages, sexes, layout: TokenLayout, cfg: TrainConfig, epoch: int, common) -> Batch:
    """The batch of patients `idx`; each one's corruption comes from a generator seeded by (seed, epoch, index)."""
    examples = [make_example(seqs[i], np.random.default_rng([cfg.seed, epoch, int(i)]), layout, cfg) for i in idx]
    return collate(examples, [ages[i] for i in idx], [sexes[i] for i in idx], common, layout.code_offset)
