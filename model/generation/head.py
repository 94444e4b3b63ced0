"""The sliced LM head of hierarchical generation: only the logits a draw reads.

A row choosing a special or a category (or closing) reads the columns [0, code_offset), a row choosing
a code reads its category's window (model/generation/draw.py), so the sampler computes just those:
a matrix product with the first code_offset rows of the embedding for the first kind (the bits of the
full LM head: a column slice of the same product), per-row products with the window's rows for the
second (PromptBart.lm_head_at). A row must get the same bits whatever its batch, so, as measured on
the kernels behind them: an nn.Linear product of at least LINEAR_ROWS rows (fewer take another path,
other rounding), and per-row products (bmm) of at least 2 rows and BMM_MIN_MACS multiply-adds per row.
The per-row products need not round like the full head's matrix product (on an AMD EPYC with torch
2.13 about 1 window logit in 12 differs in the last bit): model/generation/reference.py, the
specification, computes code logits the same way.
"""
from __future__ import annotations

import numpy as np
import torch

from promptehr.model.generation.constraints import (
    CATEGORY,
    Limits,
    RowState,
    allowed_at,
    allowed_head,
    category_windows,
)
from promptehr.model.generation.draw import SamplingOptions, draw, draw_codes, window_index
from promptehr.model.tokens.layout import TokenLayout

LINEAR_ROWS = 16  # nn.Linear's kernels give a row the same bits in any matmul of at least this many rows
BMM_MIN_MACS = 512  # per-row products of fewer multiply-adds go through torch's plain bmm loop (other rounding)


class SlicedHead:
    """A hierarchical model's LM head for the draws of one step. Needs each category's codes to be
    contiguous token ids (model/tokens/vocab.py sorts codes and a category is a code prefix, so they are)."""

    def __init__(self, model, layout: TokenLayout, freq_logits: torch.Tensor, device: torch.device):
        w = category_windows(layout)
        if w is None or not layout.hierarchical:
            raise ValueError("the sliced LM head needs a hierarchical layout with each category's codes contiguous")
        self.model, self.layout, self.freq_logits = model, layout, freq_logits
        self.windows = (torch.as_tensor(w[0], device=device), w[1])
        # codes in each category (by category token id) and the window widths its code steps are
        # grouped by (powers of two, then the widest category)
        cc = layout.code_category[layout.code_offset:]
        self.cat_sizes = torch.as_tensor(np.bincount(cc, minlength=layout.vocab_size), device=device)
        width, b = w[1], max(4, -(-BMM_MIN_MACS // model.config.d_model))
        self.buckets: list[tuple[int, int]] = []  # (largest category of the group, columns computed)
        while b < width:
            self.buckets.append((b, b))
            b *= 2
        self.buckets.append((width, max(width, b)))

    def choose(self, h: torch.Tensor, state: RowState, limits: Limits, u: torch.Tensor, opts: SamplingOptions) -> torch.Tensor:
        """One draw per row from decoder hidden states h (b, D) -> (b,) token ids, computing only the
        logits and masks the draws read: columns [0, code_offset) for rows choosing a special or a
        category, the category's window for rows choosing a code (b >= LINEAR_ROWS: the sampler's batch)."""
        L = self.layout
        in_cat = state.phase == CATEGORY
        tok = torch.empty(h.shape[0], dtype=torch.long, device=h.device)
        a = (~in_cat).nonzero().squeeze(1)
        if a.numel():
            pick = a
            if a.numel() < LINEAR_ROWS:  # too few rows for the kernels' usual path: top up with others
                pick = torch.cat([a, in_cat.nonzero().squeeze(1)[: LINEAR_ROWS - a.numel()]])
            logits = self.model.lm_head_columns(h[pick], L.code_offset)[: a.numel()]
            tok[a] = draw(logits, allowed_head(state, L, limits, a), L, u[a], opts)
        b = in_cat.nonzero().squeeze(1)
        if b.numel():
            cat = state.category[b]
            idx, inside = window_index(self.windows, cat, L.vocab_size)
            ok = allowed_at(state, b, idx, L) & inside
            logits = None if opts.code_sampler == "frequency" else self.window_logits(h[b], cat, idx)
            tok[b] = draw_codes(logits, ok, idx, L, u[b], opts, self.freq_logits)
        return tok

    def window_logits(self, h: torch.Tensor, cat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(n, width) logits of each row's window idx (columns past the row's category hold anything: no draw
        reads them, they are never allowed).

        Rows are grouped by the smallest power-of-two width covering their category, so a step reads a
        fraction of the weights a full-width window would. The per-row products (bmm) give a row the same
        bits in any group of at least 2 rows (one matrix takes another kernel: a lone row is computed
        twice) and at least BMM_MIN_MACS multiply-adds per row (columns are added for that)."""
        V, width = self.layout.vocab_size, idx.shape[1]
        out = torch.full(idx.shape, -torch.inf, device=h.device)
        size, first = self.cat_sizes[cat], idx[:, 0]
        lo = 0
        for top, cols in self.buckets:
            sel = ((size > lo) & (size <= top)).nonzero().squeeze(1)
            lo = top
            if sel.numel() == 0:
                continue
            pick = sel.repeat(2) if sel.numel() == 1 else sel
            ids = (first[pick][:, None] + torch.arange(cols, device=h.device)).clamp(max=V - 1)
            keep = min(cols, width)
            out[sel, :keep] = self.model.lm_head_at(h[pick], ids)[: sel.numel(), :keep]
        return out
