"""Batch bookkeeping of the sampler: the rows decoded together, dropping finished rows, stragglers joining.

Rows that finish leave the batch (their places are taken by rows from its end: `rows_to_keep`), so the
cost follows the live rows. When few rows are left and more patients wait, those stragglers are set
aside as a Group, decoder cache and row state included, and join the next batch when it reaches their
position (`Group.join`), so nothing is recomputed.

Determinism on CPU: the kernels behind nn.Linear give bit-identical rows for any batch of 16 rows
or more, but take another path (other rounding) below that. The batch is therefore never allowed to
shrink below MIN_ROWS rows: finished rows are kept as padding (emitting <pad>) and short batches are
padded with copies of their first patient. With that, the same seed gives byte-identical cohorts at
any batch size on the same machine and thread count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from promptehr.model.generation.constraints import DONE, RowState

if TYPE_CHECKING:
    from transformers.cache_utils import EncoderDecoderCache

    from promptehr.model.nn.promptbart import EncoderState

MIN_ROWS = 32  # batch floor for bit-identical kernels on CPU (measured: paths differ up to 15 rows)
STRAGGLERS = 8  # a batch sets its live rows aside once they are fewer than 1/STRAGGLERS of it
DROP_SHARE = 8  # finished rows leave the batch once they are at least 1/DROP_SHARE of it


@dataclass
class Group:
    """Rows decoded together, all at position `pos` (index after <s> of the next token to draw), one
    entry per batch row in every field. Between two steps either `h` (decoder output for the next draw)
    is set, or `tok` (the last drawn tokens, not yet fed to the decoder)."""

    pos: int
    ids: torch.Tensor  # (b,) long: row in the caller's lists, -1 for padding
    keys: np.ndarray  # (b,) uint64 random streams
    forced: torch.Tensor  # (b, w) long: forced token at each index after <s>, -1 for none
    state: RowState
    enc: EncoderState
    past: EncoderDecoderCache  # self-attention part: model/nn/kv_cache.py's PreallocatedCache
    age: torch.Tensor
    sex: torch.Tensor
    tok: torch.Tensor | None
    h: torch.Tensor | None

    def live(self) -> int:
        """Real rows not finished."""
        return int(((self.state.phase != DONE) & (self.ids >= 0)).sum())

    def take(self, idx: torch.Tensor, model) -> Group:
        """Keep batch rows idx (in place where it can: see RowState.compact); between steps only."""
        self.ids, self.forced, self.age, self.sex, self.tok = (x[idx] for x in (self.ids, self.forced, self.age, self.sex, self.tok))
        self.keys = self.keys[idx.cpu().numpy()]
        self.state = self.state.compact(idx)
        self.past, self.enc = model.select(self.past, self.enc, idx)
        return self

    def join(self, other: Group, model) -> None:
        """Add the live rows of `other`, a group at the same position (between steps, tok set in both)."""
        live = ((other.state.phase != DONE) & (other.ids >= 0)).nonzero().squeeze(1)
        if live.numel() < other.ids.numel():
            other.take(live, model)
        w = max(self.forced.shape[1], other.forced.shape[1])
        self.forced = torch.cat([F.pad(f, (0, w - f.shape[1]), value=-1) for f in (self.forced, other.forced)])
        self.ids, self.age, self.sex, self.tok = (torch.cat([a, b]) for a, b in (
            (self.ids, other.ids), (self.age, other.age), (self.sex, other.sex), (self.tok, other.tok)))
        self.keys = np.concatenate([self.keys, other.keys])
        self.state = RowState(**{k: torch.cat([v, getattr(other.state, k)]) for k, v in self.state.__dict__.items()})
        self.past, self.enc = model.join(self.past, self.enc, other.past, other.enc)


def rows_to_keep(done: torch.Tensor, force: bool = False) -> torch.Tensor | None:
    """Batch positions to keep after a step: the live rows, topped up with finished ones to MIN_ROWS;
    None when nothing would change (with force, every droppable row goes). In hole-filling order: kept
    rows among the first n positions stay, the kept rows beyond move into the places of dropped ones,
    so a drop copies (KV cache, row state) only about as many rows as it drops."""
    b = done.numel()
    keep = ~done
    n_live = int(keep.sum())
    if n_live == b:
        return None
    if n_live >= MIN_ROWS:
        if DROP_SHARE * (b - n_live) < b and not force:  # too few finished rows to be worth a drop yet
            return None
    else:
        if b <= MIN_ROWS:
            return None if not force else torch.arange(b, device=done.device)
        keep[done.nonzero().squeeze(1)[: MIN_ROWS - n_live]] = True  # finished rows as padding
    n = int(keep.sum())
    idx = torch.arange(n, device=done.device)
    holes = (~keep[:n]).nonzero().squeeze(1)
    idx[holes] = keep[n:].nonzero().squeeze(1) + n  # as many kept rows beyond n as holes before it
    return idx


def records(log: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> list[list[int]]:
    """Each row's tokens from the per-step log of (rows, their tokens): a row's tokens are logged in
    step order, so a stable sort by row keeps it."""
    out: list[list[int]] = [[] for _ in range(n)]
    if log:
        r = torch.cat([a for a, _ in log]).cpu().numpy()
        t = torch.cat([b for _, b in log]).cpu().numpy()
        order = np.argsort(r, kind="stable")
        bounds = np.searchsorted(r[order], np.arange(n + 1))
        toks = t[order].tolist()
        for i in range(n):
            out[i] = toks[bounds[i]:bounds[i + 1]]
    return out
