"""Validation pass and held-out perplexity: standard exp(mean NLL) over scored code positions.

Scored positions are the codes the encoder did not show: codes inside masked spans, and the codes of
the predicted next visit (model/corruption.py). The NLL of a code is that of its own token in flat mode;
in hierarchical mode it is NLL(category) + NLL(code | category), the code's full probability, so the
figures are comparable across modes. There both steps are scored as generation samples them, given
that a code comes next (what the baseline assumes too): the category step's softmax restricted to the
category tokens, the code step's to the codes of its category (model/generation/sampler.py masks a code step to
them). Without the first restriction the model would pay for the mass it rightly keeps on `</v>` and
`</s>` (about 15% at a category step) while the baseline pays nothing. The baseline is a unigram model of
training code frequencies (add-one smoothed) on the same positions: a model that ignores context must
lose to nothing less.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from promptehr.model.nn.promptbart import demographics_to_tensors
from promptehr.model.tokens.layout import TokenLayout
from promptehr.model.training.batches import IGNORE, Batch, collate
from promptehr.model.training.corruption import validation_examples


def unigram_logp(vocab) -> torch.Tensor:
    """(V,) log-probability of each code token under add-one smoothed training frequencies (0 elsewhere)."""
    counts = vocab.code_counts.astype(np.float64) + 1.0
    logp = np.zeros(len(vocab))
    logp[vocab.code_offset:] = np.log(counts / counts.sum())
    return torch.from_numpy(logp)


def autocast(device):
    """bf16 autocast on CUDA, nothing on CPU (training and validation alike)."""
    dev = torch.device(device)
    return torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)


def category_nll(logits: torch.Tensor, labels: torch.Tensor, category_offset: int, code_offset: int) -> torch.Tensor:
    """-log p(category | a category comes next): softmax over the category tokens only.
    logits (N, V), labels (N,) category token ids -> (N,)."""
    x = logits[:, category_offset:code_offset].float()  # (N, n_categories)
    return x.logsumexp(-1) - x.gather(1, (labels - category_offset).unsqueeze(1)).squeeze(1)


def within_category_nll(logits: torch.Tensor, labels: torch.Tensor, code_offset: int, code_category: torch.Tensor,
                        category_offset: int) -> torch.Tensor:
    """-log p(code | its category) with the softmax restricted to that category's codes.
    logits (N, V), labels (N,) code token ids, code_category (n_codes,) category token ids -> (N,)."""
    x = logits[:, code_offset:].float()  # (N, n_codes)
    group = code_category - category_offset  # (n_codes,) category index of each code
    own = group[labels - code_offset]  # (N,)
    same = group.unsqueeze(0) == own.unsqueeze(1)  # (N, n_codes)
    log_z = x.masked_fill(~same, float("-inf")).logsumexp(-1)
    return log_z - x.gather(1, (labels - code_offset).unsqueeze(1)).squeeze(1)


@torch.no_grad()
def evaluate(model, batches: list[tuple[str, Batch]], baseline_logp: torch.Tensor, device,
             code_category: np.ndarray | None = None) -> dict:
    """batches: (objective tag, Batch). Returns losses, perplexities (all / per tag), baseline, accuracies.
    `code_category` (n_codes,) category token ids: hierarchical mode (None: flat)."""
    hierarchical = code_category is not None
    if hierarchical:
        cc = torch.as_tensor(code_category, device=device)
        category_offset = int(cc.min())  # the first category token (every category owns a code)
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0, "lm": 0.0, "age": 0.0, "sex": 0.0, "cooc": 0.0, "tokens": 0, "correct": 0, "code_n": 0,
            "code_correct": 0}
    nll = {"all": [], "mask": [], "next_visit": []}
    base = {"all": [], "mask": [], "next_visit": []}
    baseline_logp = baseline_logp.to(device)
    for tag, batch in batches:
        batch = batch.to(device)
        with autocast(device):
            out = model(**batch.model_inputs())
        n = int((batch.labels != IGNORE).sum())
        sums["tokens"] += n
        for k, v in (("loss", out.loss), ("lm", out.lm_loss), ("age", out.age_loss), ("sex", out.sex_loss), ("cooc", out.cooc_loss)):
            sums[k] += float(v) * n
        logits = out.logits.float()
        labels = batch.labels.clamp_min(0)
        token_nll = -logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (B, T)
        valid = batch.labels != IGNORE
        pred = logits.argmax(-1)
        sums["correct"] += int(((pred == batch.labels) & valid).sum())
        is_code = (batch.labels >= model.config.code_offset) & valid
        sums["code_n"] += int(is_code.sum())
        sums["code_correct"] += int(((pred == batch.labels) & is_code).sum())
        scored = batch.scored & is_code
        if hierarchical:  # NLL(category step before the code, among categories) + NLL(code within its category)
            before = torch.zeros_like(scored)
            before[:, :-1] = scored[:, 1:]
            picked = category_nll(logits[before], batch.labels[before], category_offset, model.config.code_offset) + within_category_nll(
                logits[scored], batch.labels[scored], model.config.code_offset, cc, category_offset)
        else:
            picked = token_nll[scored]
        picked_base = -baseline_logp[batch.labels[scored]]
        for key in ("all", tag):
            if key in nll:
                nll[key].append(picked.double().cpu())
                base[key].append(picked_base.double().cpu())
    model.train(was_training)
    t = max(sums["tokens"], 1)
    result = {
        "val_loss": sums["loss"] / t, "val_lm_loss": sums["lm"] / t, "val_age_loss": sums["age"] / t,
        "val_sex_loss": sums["sex"] / t, "val_cooc_loss": sums["cooc"] / t,
        "val_token_acc": sums["correct"] / t, "val_code_acc": sums["code_correct"] / max(sums["code_n"], 1),
    }
    for key, prefix in (("all", ""), ("mask", "_masked"), ("next_visit", "_next_visit")):
        x = torch.cat(nll[key]) if nll[key] else torch.zeros(0, dtype=torch.float64)
        b = torch.cat(base[key]) if base[key] else torch.zeros(0, dtype=torch.float64)
        result[f"val_ppl{prefix}"] = math.exp(float(x.mean())) if len(x) else float("nan")
        result[f"baseline_ppl{prefix}"] = math.exp(float(b.mean())) if len(b) else float("nan")
        result[f"n_scored{prefix}"] = len(x)
    return result


def validation_batches(sequences, ages, sexes, layout: TokenLayout, config, batch_size: int, common=None) -> list[tuple[str, Batch]]:
    """The fixed validation set (seed config.val_seed) as (tag, Batch), grouped by objective and length."""
    examples = validation_examples(sequences, layout, config, config.val_seed)
    out = []
    for tag in ("mask", "next_visit"):
        group = [(i, e) for i, e in examples if e.objective == tag]
        group.sort(key=lambda ie: len(ie[1].target))
        for s in range(0, len(group), batch_size):
            part = group[s:s + batch_size]
            out.append((tag, collate([e for _, e in part], [ages[i] for i, _ in part], [sexes[i] for i, _ in part],
                                     common, layout.code_offset)))
    return out


def heldout_perplexity(model, vocab, tokenizer, patients, *, seed: int = 1234, batch_size: int = 32, device="cpu",
                       mask_ratio: float = 0.3, poisson_lambda: float = 3.0) -> dict:
    """Perplexity of a trained model on held-out patients (masked codes and next visits) beside the
    unigram baseline's. Keys: ppl, ppl_masked, ppl_next_visit, baseline_ppl, baseline_ppl_masked, ..."""
    cfg = model.config
    patients = [p for p in patients if p.visits]
    seqs = [tokenizer.encode_patient(p, cfg.max_length) for p in patients]
    age, sex = demographics_to_tensors([p.age for p in patients], [p.sex for p in patients], cfg)
    opts = SimpleNamespace(mask_ratio=mask_ratio, poisson_lambda=poisson_lambda, val_seed=seed)
    batches = validation_batches(seqs, age.tolist(), sex.tolist(), TokenLayout.of(vocab), opts, batch_size)
    r = evaluate(model.to(device), batches, unigram_logp(vocab), device,
                 vocab.code_category if tokenizer.hierarchical else None)
    return {k.replace("val_", ""): v for k, v in r.items() if "ppl" in k or "n_scored" in k}
