"""Decode-time constraints as logit masks: the visit grammar, no repeated code in a visit, the sex/age
rules, and the length limits. Whatever the model's logits, a sequence sampled through `mask_logits`
and `advance` is well formed.

Sequences (DESIGN section 4), hierarchical interleaves each code with its category first:
    <s> <v> K(c1) c1 K(c2) c2 </v> <v> ... </v> </s>        flat: <s> <v> c1 c2 </v> ... </s>
and a model that learned time (model/tokens/tokenizer.py) closes each visit with a stay token S and
opens each later visit with a gap token G:
    <s> <v> K(c1) c1 S </v> G <v> K(c2) c2 S </v> </s>
so after a non-empty visit's codes the choice is another code or a stay (not </v>), after </v> it is
a gap (another visit) or </s>, and a stay is followed by </v>, a gap by <v>.

The state of each row is a few integers plus two (B, V) bool masks, all torch tensors on the model's
device, so a step costs a handful of vectorised ops for the whole batch. The length limits are
enforced by cost: a visit is only opened, and a code only started, when the tokens left still fit
the shortest way to close the record (`[S] </v> </s>`), so generation always ends inside max_length.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch

from promptehr.model.tokens.layout import TokenLayout

# Row phases: what the last token was.
START = 0  # after <s>: only <v>
OPEN = 1  # after <v> or a code: a category (hier) / code (flat), or </v> once the visit is non-empty
CATEGORY = 2  # after a category token: a not-yet-used allowed code of that category
CLOSED = 3  # after </v>: <v> (a gap token, with time) or </s>
DONE = 4  # after </s>: only <pad> (rows kept in the batch as padding)
STAYED = 5  # after a stay token: only </v>
GAPPED = 6  # after a gap token: only <v>


@dataclass(frozen=True)
class Limits:
    max_visits: int = 20
    max_codes_per_visit: int = 40  # MIMIC-III admissions have up to 39 diagnoses
    max_length: int = 512  # decoder tokens including <s> and </s>

    def __post_init__(self):
        if self.max_visits < 1 or self.max_codes_per_visit < 1:
            raise ValueError("max_visits and max_codes_per_visit must be at least 1")
        if self.max_length < 5:
            raise ValueError("max_length must be at least 5 (<s> <v> K c </v> </s> needs 6 hierarchical, 5 flat)")


@dataclass
class RowState:
    """Per-row decoding state. All tensors have batch size B on dim 0."""

    phase: torch.Tensor  # (B,) long
    length: torch.Tensor  # (B,) long: tokens emitted so far including <s>
    n_visits: torch.Tensor  # (B,) long: closed visits
    n_in_visit: torch.Tensor  # (B,) long: codes in the open visit
    category: torch.Tensor  # (B,) long: last category token (phase CATEGORY)
    allowed: torch.Tensor  # (B, V) bool: the sex/age rules, fixed per patient
    used: torch.Tensor  # (B, V) bool: codes already in the open visit
    cat_left: torch.Tensor  # (B, n_categories) long: allowed codes of each category not yet in the visit
    cat_full: torch.Tensor  # (B, n_categories) long: cat_left at the start of a visit
    has_any: torch.Tensor  # (B,) bool: the patient has at least one allowed code at all
    time_ok: torch.Tensor  # (B, n_gaps + n_stays) bool: the time tokens the patient may emit (allowed's columns)

    def select(self, idx: torch.Tensor) -> RowState:
        return RowState(**{k: v.index_select(0, idx) for k, v in self.__dict__.items()})

    def compact(self, idx: torch.Tensor) -> RowState:
        """select(idx) in place, for idx no longer than the batch: only rows whose position changes are
        copied (the sampler's row drops move a few rows into the freed places); returns self."""
        for k, v in self.__dict__.items():
            setattr(self, k, select_in_place(v, idx))
        return self


def select_in_place(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x.index_select(0, idx) written into x's own first len(idx) rows (a view of them is returned);
    copies only the rows with idx[i] != i. Sources are read before anything is written, so any idx
    with len(idx) <= len(x) works (repeats and swaps too)."""
    n = idx.numel()
    moved = (idx != torch.arange(n, device=idx.device)).nonzero().squeeze(1)
    if moved.numel():
        x[moved] = x[idx[moved]]
    return x[:n]


def _category_index(layout: TokenLayout, device) -> torch.Tensor:
    """(n_codes,) category index (0-based among categories) of each code token."""
    cc = layout.code_category[layout.code_offset:] - layout.category_offset
    return torch.as_tensor(cc, dtype=torch.long, device=device)


def category_windows(layout: TokenLayout) -> tuple[np.ndarray, int] | None:
    """(first code token id per category token id (V,), widest category) when every category's codes
    are contiguous token ids (codes are sorted and a category is a code prefix, so they are); else None."""
    cc = layout.code_category[layout.code_offset:]
    if len(cc) == 0 or (np.diff(cc) < 0).any():
        return None
    cats, first, counts = np.unique(cc, return_index=True, return_counts=True)
    lo = np.zeros(layout.vocab_size, dtype=np.int64)
    lo[cats] = layout.code_offset + first
    return lo, int(counts.max())


_CODE_CATEGORY: dict[tuple[int, str], torch.Tensor] = {}


def _code_category(layout: TokenLayout, device) -> torch.Tensor:
    """layout.code_category as a tensor on `device`, made once (not a host-to-device copy every step)."""
    key = (id(layout.code_category), str(device))
    t = _CODE_CATEGORY.get(key)
    if t is None:
        if len(_CODE_CATEGORY) > 64:
            _CODE_CATEGORY.clear()
        # keep the array alive with the tensor so its id is not reused while cached
        t = _CODE_CATEGORY[key] = torch.as_tensor(layout.code_category, device=device)
        t._source = layout.code_category
    return t


def init_state(layout: TokenLayout, allowed: torch.Tensor) -> RowState:
    """State after `<s>` for B rows; `allowed` (B, V) bool is the rules mask per patient (True for specials)."""
    B, V = allowed.shape
    assert V == layout.vocab_size, (V, layout.vocab_size)
    dev = allowed.device
    allowed = allowed.clone()
    # specials are governed by the grammar alone; time tokens by the grammar and `allowed` (the sampler
    # turns off the bins no training record had)
    allowed[:, : layout.category_offset - layout.n_gaps - layout.n_stays] = True
    cat_idx = _category_index(layout, dev)
    # a category is usable only if the category itself is allowed and it has an allowed code
    code_ok = allowed[:, layout.code_offset:].long()  # (B, n_codes)
    cat_full = torch.zeros(B, layout.n_categories, dtype=torch.long, device=dev).index_add_(1, cat_idx, code_ok)
    if layout.hierarchical:
        cat_full = cat_full * allowed[:, layout.category_offset: layout.code_offset].long()
    zeros = torch.zeros(B, dtype=torch.long, device=dev)
    return RowState(
        phase=zeros.clone(), length=torch.ones(B, dtype=torch.long, device=dev), n_visits=zeros.clone(),
        n_in_visit=zeros.clone(), category=torch.full((B,), -1, dtype=torch.long, device=dev),
        allowed=allowed, used=torch.zeros(B, V, dtype=torch.bool, device=dev), cat_left=cat_full.clone(), cat_full=cat_full,
        has_any=cat_full.sum(1) > 0, time_ok=_time_ok(allowed, layout),
    )


def _time_ok(allowed: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """(B, n_gaps + n_stays) bool: allowed's time columns (a copy), every stay for a row allowed none (a
    visit must be able to close; without any gap a row simply opens no later visit)."""
    ok = allowed[:, layout.gap_offset: layout.gap_offset + layout.n_gaps + layout.n_stays].clone()
    if layout.n_stays:
        ok[~ok[:, layout.n_gaps:].any(1), layout.n_gaps:] = True
    return ok


def allowed_next(state: RowState, layout: TokenLayout, limits: Limits) -> torch.Tensor:
    """(B, V) bool: the tokens the grammar and the rules allow next for each row. Never all False."""
    B, V = state.used.shape
    co = layout.code_offset
    out = torch.zeros(B, V, dtype=torch.bool, device=state.used.device)
    add = _fill_head(out, state, layout, limits)
    avail_code = state.allowed[:, co:] & ~state.used[:, co:]  # (B, n_codes)
    if not layout.hierarchical:
        out[:, co:] |= avail_code & add[:, None]
    cat = state.phase == CATEGORY
    if cat.any():
        code_cat = _code_category(layout, out.device)[co:]  # (n_codes,)
        out[:, co:] |= avail_code & (code_cat[None, :] == state.category[:, None]) & cat[:, None]
    return out


def allowed_head(state: RowState, layout: TokenLayout, limits: Limits, rows: torch.Tensor | None = None) -> torch.Tensor:
    """(B, code_offset) bool: allowed_next's columns before the codes (specials and categories), without
    building the code columns; only rows `rows` (n,) -> (n, code_offset) when given. Hierarchical
    layouts only (flat ones put a visit's codes right after <v>)."""
    assert layout.hierarchical
    if rows is not None:
        state = _HeadRows(*(getattr(state, f)[rows] for f in _HeadRows._fields))
    out = torch.zeros(state.phase.shape[0], layout.code_offset, dtype=torch.bool, device=state.phase.device)
    _fill_head(out, state, layout, limits)
    return out


class _HeadRows(NamedTuple):
    """The RowState fields _fill_head reads, for a subset of rows."""

    phase: torch.Tensor
    length: torch.Tensor
    n_visits: torch.Tensor
    n_in_visit: torch.Tensor
    cat_left: torch.Tensor
    has_any: torch.Tensor
    time_ok: torch.Tensor


def allowed_tokens(state: RowState, rows: torch.Tensor, tokens: torch.Tensor, layout: TokenLayout,
                   limits: Limits) -> torch.Tensor:
    """(n,) bool: allowed_next[rows[i], tokens[i]], without building whole rows when hierarchical."""
    if not layout.hierarchical:
        return allowed_next(state.select(rows), layout, limits).gather(1, tokens[:, None]).squeeze(1)
    co = layout.code_offset
    head = allowed_head(state, layout, limits, rows).gather(1, tokens.clamp(max=co - 1)[:, None]).squeeze(1)
    code = allowed_at(state, rows, tokens.clamp(min=co)[:, None], layout).squeeze(1) & (state.phase[rows] == CATEGORY)
    return torch.where(tokens < co, head, code)


def allowed_at(state: RowState, rows: torch.Tensor, idx: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """(n, w) bool: allowed_next[rows].gather(1, idx) for rows in phase CATEGORY, where idx (n, w) holds
    code token ids (< vocab_size): a not-yet-used allowed code of the row's category."""
    cc = _code_category(layout, idx.device)
    return (state.allowed[rows].gather(1, idx) & ~state.used[rows].gather(1, idx)
            & (cc[idx] == state.category[rows][:, None]))


def _fill_head(out: torch.Tensor, state: RowState, layout: TokenLayout, limits: Limits) -> torch.Tensor:
    """Set allowed_next's columns below code_offset into `out` (zeros, B x >= code_offset); returns the
    rows that may add a code to their open visit (flat layouts allow the codes themselves there)."""
    left = limits.max_length - state.length  # tokens that may still be emitted, this one included
    # shortest completions: a new visit is [G] <v> [K] c [S] </v> </s>, a new code in a visit is [K] c [S] </v> </s>
    unit = 2 if layout.hierarchical else 1
    gap, stay = int(layout.gaps), int(layout.stays)
    can_open = (state.n_visits < limits.max_visits) & (left >= unit + 3 + gap + stay)
    can_add = (state.n_in_visit < limits.max_codes_per_visit) & (left >= unit + 2 + stay)
    has_any = state.has_any
    ph = state.phase

    start = ph == START
    first = start & has_any & (left >= unit + 3 + stay)
    out[:, layout.visit_open] |= first
    # degenerate: a patient for whom every code is forbidden (or max_length too short for one visit)
    # gets the empty record <s> </s>
    out[:, layout.eos] |= start & ~first

    opn = ph == OPEN
    add = opn & can_add
    if layout.hierarchical:
        out[:, layout.category_offset: layout.code_offset] |= (state.cat_left > 0) & add[:, None]
    nonempty = state.n_in_visit > 0
    if stay:  # a visit ends with its length of stay
        out[:, layout.stay_offset: layout.stay_offset + layout.n_stays] |= (opn & nonempty)[:, None] & state.time_ok[:, layout.n_gaps:]
        out[:, layout.visit_close] |= ph == STAYED
    else:
        out[:, layout.visit_close] |= opn & nonempty
    # an empty open visit with nothing to add cannot happen (a visit opens only when a code fits)

    closed = ph == CLOSED
    if gap:  # a later visit starts with the days since the last one
        out[:, layout.gap_offset: layout.gap_offset + layout.n_gaps] |= (closed & can_open & has_any)[:, None] & state.time_ok[:, : layout.n_gaps]
        out[:, layout.visit_open] |= ph == GAPPED
    else:
        out[:, layout.visit_open] |= closed & can_open & has_any
    out[:, layout.eos] |= closed

    out[:, layout.pad] |= ph == DONE
    return add


def mask_logits(logits: torch.Tensor, allowed: torch.Tensor, layout: TokenLayout, closing: bool = True) -> torch.Tensor:
    """Float32 logits with disallowed tokens at -inf; safe for any input (NaN, +-inf, huge values).

    NaN counts as -inf. A row with +inf on allowed tokens becomes uniform over those tokens. A row
    whose allowed logits are all -inf falls back to closing: `</s>` if allowed, else `</v>`, else
    uniform over the allowed tokens. Every row of the result has at least one finite entry.
    `closing=False` for column windows that hold no special tokens (uniform fallback only).
    """
    x = logits.float().masked_fill(~allowed, -torch.inf)
    top = x.amax(1)  # (B,): NaN rows and +inf rows need care, -inf rows are dead
    bad = torch.isnan(top)  # amax propagates NaN: only those rows pay for the clean-up
    if bool(bad.any()):
        x[bad] = torch.nan_to_num(x[bad], nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)
        top[bad] = x[bad].amax(1)
    pos = top == torch.inf
    if bool(pos.any()):
        x[pos] = torch.where(x[pos] == torch.inf, 0.0, -torch.inf)
    dead = top == -torch.inf
    if bool(dead.any()):
        fb = allowed[dead].float()  # uniform over allowed ...
        for tok in (layout.visit_close, layout.eos) if closing else ():  # ... unless we can close: </s> wins over </v>
            can = allowed[dead, tok]
            one = torch.zeros_like(fb)
            one[:, tok] = 1.0
            fb = torch.where(can[:, None], one, fb)
        x[dead] = torch.where(fb > 0, 0.0, -torch.inf)
    return x


def advance(state: RowState, tokens: torch.Tensor, layout: TokenLayout, limits: Limits, *,
            check: bool = True, allowed: torch.Tensor | None = None, inplace: bool = False) -> RowState:
    """State after each row emits tokens[i] (B,). With check, a token the constraints forbid raises
    ValueError; pass `allowed` (this step's allowed_next) to save recomputing it. `inplace` updates
    `state` itself and returns it (no copies of the (B, V) masks; for callers done with the old state)."""
    if check:
        if allowed is None:
            allowed = allowed_next(state, layout, limits)
        ok = allowed.gather(1, tokens[:, None]).squeeze(1)
        if not bool(ok.all()):
            bad = int((~ok).nonzero()[0, 0])
            raise ValueError(f"token {int(tokens[bad])} is not allowed in row {bad} (phase {int(state.phase[bad])})")
    live = state.phase != DONE
    s = state if inplace else replace(state, used=state.used.clone(), cat_left=state.cat_left.clone())
    is_code = tokens >= layout.code_offset
    is_cat = (tokens >= layout.category_offset) & ~is_code
    opens = tokens == layout.visit_open
    closes = tokens == layout.visit_close
    ends = tokens == layout.eos
    stays = (tokens >= layout.stay_offset) & (tokens < layout.stay_offset + layout.n_stays)
    gaps = (tokens >= layout.gap_offset) & (tokens < layout.gap_offset + layout.n_gaps)

    # a new visit starts with nothing used
    if opens.any():
        s.used[opens] = False
        s.cat_left[opens] = state.cat_full[opens]
    rows = is_code.nonzero().squeeze(1)
    if rows.numel():
        tok = tokens[rows]
        s.used[rows, tok] = True
        cat = _code_category(layout, tokens.device)[tok] - layout.category_offset
        s.cat_left[rows, cat] -= 1
    s.n_in_visit = torch.where(opens, 0, state.n_in_visit + is_code.long())
    s.n_visits = state.n_visits + closes.long()
    s.category = torch.where(is_cat, tokens, state.category)
    phase = state.phase if inplace else state.phase.clone()
    phase[opens] = OPEN
    phase[is_code] = OPEN
    phase[is_cat] = CATEGORY
    phase[closes] = CLOSED
    phase[ends] = DONE
    if layout.n_stays or layout.n_gaps:
        phase[stays] = STAYED
        phase[gaps] = GAPPED
    s.phase = phase
    s.length = state.length + live.long()
    return s
