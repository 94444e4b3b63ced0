"""Held-out perplexity for the report, in one pass: the standard exp(mean NLL) and the research system's
median of medians from the same per-code NLLs.

The examples, their scored positions and the NLL of a code are model/training/perplexity.py's (the
same validation_examples, the same category / within-category NLL in hierarchical mode), so "masked",
"next_visit" and "all" equal heldout_perplexity's (a test holds them together). This pass keeps the NLL
of every scored code and its example, which that one does not, and skips what the report does not read
(the training losses, accuracies, the full-vocabulary log-softmax of unscored positions).

Median of medians, as the research system computes it (PromptEHR's Evaluator: per batch of
eval_batch_size = 8 examples, the median over the batch's scored codes of exp(NLL); then the median
over batches): examples of one objective, in patient order, are cut into groups of 8; the figure is
the median over groups of the group's median per-code perplexity. Medians ignore how bad the worst
codes are, a mean of NLLs does not, so the two figures are not comparable (DE-SynPUF, 300 holdout
patients, small model of sample 1: masked 209.7 by exp(mean NLL), 236.2 by median of medians).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from promptehr.model.nn.promptbart import demographics_to_tensors
from promptehr.model.tokens.layout import TokenLayout
from promptehr.model.training.batches import IGNORE, collate
from promptehr.model.training.corruption import validation_examples
from promptehr.model.training.perplexity import category_nll, unigram_logp, within_category_nll

RESEARCH_BATCH = 8  # PromptEHR's eval_batch_size: the groups its medians are taken over
TAGS = {"mask": "masked", "next_visit": "next_visit"}


def median_of_medians(nll: np.ndarray, example: np.ndarray, group: int = RESEARCH_BATCH) -> float | None:
    """Median over groups of `group` consecutive examples of the median exp(NLL) of their codes.
    nll, example (n,): one entry per scored code; example = its example's rank within its objective."""
    if len(nll) == 0:
        return None
    ppl = np.exp(nll)
    batch = example // group
    return float(np.median([np.median(ppl[batch == b]) for b in np.unique(batch)]))


def _batch_nll(model, batch, hierarchical_cc, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, nll, label) of every scored code of one batch, in row-major order."""
    batch = batch.to(device)
    logits = model(**{k: v for k, v in batch.model_inputs().items() if k not in ("labels", "cooc")}).logits
    code_offset = model.config.code_offset
    valid = batch.labels != IGNORE
    scored = batch.scored & (batch.labels >= code_offset) & valid  # (B, T)
    labels = batch.labels[scored]
    if hierarchical_cc is not None:  # NLL(category step before the code) + NLL(code within its category)
        before = torch.zeros_like(scored)
        before[:, :-1] = scored[:, 1:]
        category_offset = int(hierarchical_cc.min())
        nll = category_nll(logits[before].float(), batch.labels[before], category_offset, code_offset) + within_category_nll(
            logits[scored].float(), labels, code_offset, hierarchical_cc, category_offset)
    else:
        nll = -logits[scored].float().log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return scored.nonzero()[:, 0].cpu(), nll.double().cpu(), labels.cpu()


@torch.inference_mode()
def heldout_scores(model, vocab, tokenizer, patients, *, seed: int = 1234, batch_size: int = 16, device="cpu",
                   mask_ratio: float = 0.3, poisson_lambda: float = 3.0) -> dict[str, float]:
    """{"masked", "next_visit", "all"} = exp(mean NLL), the unigram baseline's "baseline_*", "n_scored*",
    and "masked_median_of_medians", "next_visit_median_of_medians"."""
    model = model.to(device).eval()
    cfg = model.config
    patients = [p for p in patients if p.visits]
    seqs = [tokenizer.encode_patient(p, cfg.max_length) for p in patients]
    age, sex = demographics_to_tensors([p.age for p in patients], [p.sex for p in patients], cfg)
    age, sex = age.tolist(), sex.tolist()
    opts = SimpleNamespace(mask_ratio=mask_ratio, poisson_lambda=poisson_lambda)
    examples = validation_examples(seqs, TokenLayout.of(vocab), opts, seed)
    cc = torch.as_tensor(vocab.code_category, device=device) if tokenizer.hierarchical else None
    base_logp = unigram_logp(vocab)
    out: dict[str, float] = {}
    every, every_base = [], []
    for tag, name in TAGS.items():
        group = [(rank, i, e) for rank, (i, e) in enumerate([ie for ie in examples if ie[1].objective == tag])]
        group.sort(key=lambda r: len(r[2].target))  # as validation_batches: by length, less padding
        nll, base, rank = [], [], []
        for s in range(0, len(group), batch_size):
            part = group[s:s + batch_size]
            batch = collate([e for _, _, e in part], [age[i] for _, i, _ in part], [sex[i] for _, i, _ in part],
                            None, vocab.code_offset)
            row, x, labels = _batch_nll(model, batch, cc, device)
            nll.append(x)
            base.append(-base_logp[labels])
            rank.append(torch.as_tensor([part[r][0] for r in row.tolist()], dtype=torch.long))
        x = torch.cat(nll) if nll else torch.zeros(0, dtype=torch.float64)
        b = torch.cat(base) if base else torch.zeros(0, dtype=torch.float64)
        every.append(x)
        every_base.append(b)
        out.update(_means(x, b, name))
        ranks = torch.cat(rank).numpy() if rank else np.zeros(0, dtype=np.int64)
        out[f"{name}_median_of_medians"] = median_of_medians(x.numpy(), ranks)
    out.update(_means(torch.cat(every), torch.cat(every_base), "all"))
    return {k: v for k, v in out.items() if v is not None}


def _means(nll: torch.Tensor, base: torch.Tensor, name: str) -> dict[str, float]:
    suffix = "" if name == "all" else f"_{name}"
    if len(nll) == 0:
        return {f"n_scored{suffix}": 0.0}
    return {name: math.exp(float(nll.mean())), f"baseline_{name}": math.exp(float(base.mean())),
            f"n_scored{suffix}": float(len(nll))}
