"""Batched sampler on the KV cache: many patients at once, each with its own random stream.

How a batch is generated (see `sample_batch`):
- The encoder runs once, on an empty input: demographics prompts only. Training keeps a share of
  examples with an empty encoder input (DESIGN section 4), so this is in distribution. Required
  codes and reconstruction prefixes are not put in the encoder: they are forced as the first
  decoder tokens, which both conditions everything after them and guarantees they are in the record.
- The first decoder call puts the decoder prompt, `<s>` and the prefix common to all rows into the
  KV cache; every later step feeds one token per live row. Rows that finish leave the batch (their
  cache rows are dropped), so the cost follows the live rows.
- Each step: logits -> constraint mask (model/constraints.py) -> temperature / top-k / top-p ->
  one draw per row by inverse CDF with a uniform that is a hash of (row key, position). The row key
  is a hash of (cohort seed, patient index), so patient i gets the same numbers whatever the batch
  size, shard or batch neighbours.

Determinism on CPU: the kernels behind nn.Linear give bit-identical rows for any batch of 16 rows
or more, but take another path (other rounding) below that. The batch is therefore never allowed to
shrink below MIN_ROWS rows: finished rows are kept as padding (emitting <pad>) and short batches are
padded with copies of the first patient. With that, the same seed gives byte-identical cohorts at any
batch size on the same machine and thread count.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.constraints import (
    DONE, Limits, RowState, TokenLayout, advance, allowed_next, init_state, mask_logits, tokens_to_visits,
)

MIN_ROWS = 32  # batch floor for bit-identical kernels on CPU (measured: paths differ up to 15 rows)
TOPK_PROBE = 64  # top-p first looks at the best 64 tokens; rows needing more fall back to a full sort

_M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64 finaliser on a Python int: a well-spread 64-bit hash, the same on every platform."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def row_key(seed: int, index: int, stream: int = 0) -> int:
    """The random stream of patient `index` in the cohort of `seed` (stream 0: tokens)."""
    return _mix64(_mix64(_mix64(int(seed) & _M64) ^ int(index)) ^ int(stream))


def uniforms(keys: np.ndarray, position: np.ndarray | int) -> np.ndarray:
    """(B,) float64 in [0, 1): the draw of each row at a decoder position (vectorised splitmix64)."""
    with np.errstate(over="ignore"):
        x = keys.astype(np.uint64) ^ (np.asarray(position, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03))
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 0  # 0: off
    code_sampler: str = "model"  # hierarchical stage 2: "model" (conditioned) or "frequency" (training counts)

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.code_sampler not in ("model", "frequency"):
            raise ValueError(f"code_sampler must be 'model' or 'frequency', got {self.code_sampler!r}")


def _top_p_threshold(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B,) smallest probability kept by nucleus sampling: the fewest best tokens whose mass reaches top_p."""
    k = min(TOPK_PROBE, probs.shape[1])
    vals = torch.topk(probs, k, dim=1).values  # (B, k) descending
    cum = vals.cumsum(1)
    covered = cum[:, -1] >= top_p
    if not bool(covered.all()):  # flat rows: sort them fully (torch.sort over V is slow, so only these)
        rows = (~covered).nonzero().squeeze(1)
        full = torch.sort(probs[rows], dim=1, descending=True).values
        thr_rows = _threshold_from_sorted(full, full.cumsum(1), top_p)
    thr = _threshold_from_sorted(vals, cum, top_p)
    if not bool(covered.all()):
        thr[rows] = thr_rows
    return thr


def _threshold_from_sorted(vals: torch.Tensor, cum: torch.Tensor, top_p: float) -> torch.Tensor:
    # keep token j while the mass before it is below top_p; the top token is always kept
    n_keep = ((cum - vals) < top_p).sum(1).clamp(min=1)  # (B,)
    return vals.gather(1, (n_keep - 1)[:, None]).squeeze(1)


def sample_from_logits(masked: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """(B,) token ids. `masked` (B, V) float32 with at least one finite entry per row (mask_logits);
    `u` (B,) float64 uniforms. Top-k then top-p on the renormalised rest; ties at a cut are kept,
    so the kept set is a function of the row alone. Inverse CDF in vocabulary order (float64)."""
    # shift by the row max first: huge finite logits / a small temperature must not overflow to inf
    probs = torch.softmax((masked - masked.amax(1, keepdim=True)) / temperature, dim=1)
    if top_k and top_k < probs.shape[1]:
        kth = torch.topk(probs, top_k, dim=1).values[:, -1:]
        probs = torch.where(probs >= kth, probs, 0.0)
        probs = probs / probs.sum(1, keepdim=True)
    if top_p < 1.0:
        thr = _top_p_threshold(probs, top_p)
        probs = torch.where(probs >= thr[:, None], probs, 0.0)
    cdf = probs.double().cumsum(1)  # (B, V)
    target = (u.to(cdf.device) * cdf[:, -1])[:, None]
    tok = torch.searchsorted(cdf, target, right=True).squeeze(1)
    # u * total may round up to total: never step past the last token with mass
    ids = torch.arange(probs.shape[1], device=probs.device)
    last = torch.where(probs > 0, ids, -1).amax(1)
    return torch.minimum(tok, last)


def choose(logits: torch.Tensor, allowed: torch.Tensor, layout: TokenLayout, u: torch.Tensor, opts: SamplingOptions,
           freq_logits: torch.Tensor | None = None, in_category: torch.Tensor | None = None) -> torch.Tensor:
    """One constrained draw per row. With `freq_logits` (V,) and `in_category` (B,) bool, rows that are
    picking a code inside a chosen category draw from training frequencies instead of the model."""
    masked = mask_logits(logits, allowed, layout)
    tok = sample_from_logits(masked, u, opts.temperature, opts.top_k, opts.top_p)
    if opts.code_sampler == "frequency" and freq_logits is not None and in_category is not None and bool(in_category.any()):
        rows = in_category.nonzero().squeeze(1)
        fm = mask_logits(freq_logits.expand(rows.numel(), -1), allowed[rows], layout)
        tok[rows] = sample_from_logits(fm, u[rows], 1.0, 0, 1.0)
    return tok
