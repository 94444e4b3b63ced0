"""Drawing a token: logits -> constraint mask -> temperature / top-k / top-p -> inverse CDF with the row's uniform.

A draw reads only the columns its step can choose (model/generation/constraints.py decides which are
allowed): the whole vocabulary in flat mode; in hierarchical mode the specials and categories
(columns [0, code_offset)) for a row choosing a category or closing, and the window of its category's
codes for a row choosing a code (`window_index`: as wide as the widest category, columns past the
category never allowed). The softmax, the sort and the cumulative sum run over those columns only,
so a row's token is a function of the row alone (its logits, its mask, its uniform).
"""
from __future__ import annotations

import numpy as np
import torch

from promptehr.model.generation.constraints import mask_logits
from promptehr.model.generation.options import DEFAULT_FREQUENCY_MIX, SamplingOptions
from promptehr.model.tokens.layout import TokenLayout

__all__ = ["SamplingOptions", "draw", "draw_codes", "sample_from_logits", "window_index"]  # options live in options.py


def _sorted_desc(x: torch.Tensor) -> torch.Tensor:
    # values only: on CPU numpy's sort beats torch.sort ~10x and torch.topk(64) 2-5x (measured on 256 rows:
    # 0.36 ms vs 6.5 ms and 1.7 ms at 695 columns, 3.9 vs 77 and 6.3 ms at 6,000)
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=1)[:, ::-1].copy())  # copy: positive strides even for 1 column
    return torch.sort(x, dim=1, descending=True).values


def _threshold_from_sorted(vals: torch.Tensor, cum: torch.Tensor, top_p: float) -> torch.Tensor:
    # keep token j while the mass before it is below top_p; the top token is always kept
    n_keep = ((cum - vals) < top_p).sum(1).clamp(min=1)  # (B,)
    return vals.gather(1, (n_keep - 1)[:, None]).squeeze(1)


def sample_from_logits(masked: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """(B,) token ids. `masked` (B, V) float32 with at least one finite entry per row (mask_logits);
    `u` (B,) float64 uniforms. Top-k then top-p on the renormalised rest; ties at a cut are kept,
    so the kept set is a function of the row alone. Inverse CDF in vocabulary order (float64)."""
    if temperature == 1.0:
        probs = torch.softmax(masked, dim=1)  # the same bits as with the shift below (softmax shifts by the max itself)
    else:  # shift by the row max first: huge finite logits / a small temperature must not overflow to inf
        probs = torch.softmax((masked - masked.amax(1, keepdim=True)) / temperature, dim=1)
    if top_k and top_k < probs.shape[1]:
        kth = _sorted_desc(probs)[:, top_k - 1: top_k]
        probs = torch.where(probs >= kth, probs, 0.0)
        probs = probs / probs.sum(1, keepdim=True)
    if top_p < 1.0:
        # the kept set from the probabilities sorted whole (one sort is cheaper than a top-k probe on CPU)
        srt = _sorted_desc(probs)
        thr = _threshold_from_sorted(srt, srt.cumsum(1), top_p)
        probs = torch.where(probs >= thr[:, None], probs, 0.0)
    return _inverse_cdf(probs, u.to(probs.device))


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(B,) column of the first cdf entry above u * total; zero-mass columns are never chosen."""
    cdf = probs.double().cumsum(1)  # (B, n)
    total = cdf[:, -1]
    # u * total may round up to total: stay strictly below it, so the draw lands on a token with mass
    target = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target[:, None], right=True).squeeze(1)


def draw(logits: torch.Tensor, ok: torch.Tensor, layout: TokenLayout, u: torch.Tensor, opts: SamplingOptions) -> torch.Tensor:
    """One constrained draw per row over the first n columns of the vocabulary: `logits` and `ok`
    (B, n), n = vocab_size (flat) or code_offset (hierarchical: specials and categories) -> token ids."""
    masked = mask_logits(logits, ok, layout)
    if opts.stop_bias:  # the end-of-record decision, shifted (SamplingOptions.stop_bias); -inf stays -inf
        masked[:, layout.eos] += opts.stop_bias
    return sample_from_logits(masked, u, opts.temperature, opts.top_k, opts.top_p)


def window_index(windows: tuple[torch.Tensor, int], category: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, width) token ids of each row's window (its category's first code onwards, clamped to the
    vocabulary) and (n, width) bool: the id is really in the vocabulary. `windows`: (first code id per
    category token id (V,), widest category), from constraints.category_windows."""
    lo, width = windows
    idx = lo[category][:, None] + torch.arange(width, device=category.device)
    return idx.clamp(max=vocab_size - 1), idx < vocab_size


def draw_codes(logits: torch.Tensor | None, ok: torch.Tensor, idx: torch.Tensor, layout: TokenLayout, u: torch.Tensor,
               opts: SamplingOptions, freq_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Hierarchical draw of a code in each row's window idx (n, w): `logits` (n, w) of those ids (unused,
    may be None, with code_sampler="frequency": then training frequencies `freq_logits` (V,) are drawn
    from plainly, no temperature/top-k/top-p), `ok` (n, w) which of them are allowed -> token ids.
    With a frequency_mix m > 0 (None: DEFAULT_FREQUENCY_MIX; only hierarchical models come here, so a flat
    one's default is 0) the draw is from (1 - m) * the model's probabilities (at its temperature) + m * the
    frequencies', both over the allowed codes, then top-k/top-p."""
    mix = DEFAULT_FREQUENCY_MIX if opts.frequency_mix is None else opts.frequency_mix
    if opts.code_sampler == "frequency" and freq_logits is not None:
        col = sample_from_logits(mask_logits(freq_logits[idx], ok, layout, closing=False), u, 1.0, 0, 1.0)
    elif mix and freq_logits is not None:
        model = mask_logits(logits, ok, layout, closing=False)
        model = model - model.amax(1, keepdim=True)
        p = (1 - mix) * torch.softmax(model / opts.temperature, dim=1)
        p = p + mix * torch.softmax(mask_logits(freq_logits[idx], ok, layout, closing=False), dim=1)
        col = sample_from_logits(torch.log(p), u, 1.0, opts.top_k, opts.top_p)  # log 0 = -inf: never drawn
    else:
        col = sample_from_logits(mask_logits(logits, ok, layout, closing=False), u, opts.temperature, opts.top_k, opts.top_p)
    return idx.gather(1, col[:, None]).squeeze(1)
