"""Batched sampler on the KV cache: many patients at once, each with its own random stream.

How a batch is generated (see `Sampler.generate_many`):
- The encoder runs once, on an empty input: demographics prompts only (once per distinct age and sex).
  Training keeps a share of examples with an empty encoder input (DESIGN section 4), so this is in
  distribution. Required codes and reconstruction prefixes are not put in the encoder: they are forced
  as the first decoder tokens, which both conditions everything after them and guarantees they are in
  the record.
- The first decoder call puts the decoder prompt, `<s>` and the prefix common to all rows into the
  KV cache (model/promptbart.py's PreallocatedCache: written in place, no copy per step); every later
  step feeds one token per live row. Rows that finish leave the batch (their places are taken by rows
  from its end), so the cost follows the live rows. When few rows are left and more patients wait,
  those stragglers are set aside with their cache and join the next batch when it reaches their position.
- Each step: logits -> constraint mask (model/constraints.py) -> temperature / top-k / top-p ->
  one draw per row by inverse CDF with a uniform that is a hash of (row key, position). The row key
  is a hash of (cohort seed, patient index), so patient i gets the same numbers whatever the batch
  size, shard or batch neighbours. Hierarchical models compute only what a draw reads: logits of the
  specials and categories for a row choosing a category (or closing), of its category's codes for a
  row choosing a code (_choose_sliced), with the same bits as the full LM head.

Determinism on CPU: the kernels behind nn.Linear give bit-identical rows for any batch of 16 rows
or more, but take another path (other rounding) below that. The batch is therefore never allowed to
shrink below MIN_ROWS rows: finished rows are kept as padding (emitting <pad>) and short batches are
padded with copies of the first patient. With that, the same seed gives byte-identical cohorts at any
batch size on the same machine and thread count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from model.generation.constraints import (
    CATEGORY,
    DONE,
    Limits,
    RowState,
    advance,
    allowed_at,
    allowed_head,
    allowed_next,
    allowed_tokens,
    category_windows,
    init_state,
    mask_logits,
    tokens_to_visits,
)
from model.tokens.layout import TokenLayout

if TYPE_CHECKING:
    from transformers.cache_utils import EncoderDecoderCache

    from model.nn.promptbart import EncoderState

MIN_ROWS = 32  # batch floor for bit-identical kernels on CPU (measured: paths differ up to 15 rows)
STRAGGLERS = 8  # a batch sets its live rows aside once they are fewer than 1/STRAGGLERS of it
DROP_SHARE = 8  # finished rows leave the batch once they are at least 1/DROP_SHARE of it
LINEAR_ROWS = 16  # nn.Linear's kernels give a row the same bits in any matmul of at least this many rows
BMM_MIN_MACS = 512  # per-row products of fewer multiply-adds go through torch's plain bmm loop (other rounding)

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


def choose(logits: torch.Tensor, allowed: torch.Tensor, layout: TokenLayout, u: torch.Tensor, opts: SamplingOptions,
           freq_logits: torch.Tensor | None = None, in_category: torch.Tensor | None = None,
           category: torch.Tensor | None = None, windows: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
    """One constrained draw per row. `in_category` (B,) bool marks rows picking a code inside the
    category they just chose (`category` (B,) its token id); with code_sampler="frequency" those draw
    from training frequencies `freq_logits` (V,) instead of the model, plainly (no temperature/top-p).

    Hierarchical speed-up (`windows` = first code id per category, widest category): the category
    step only needs the specials and categories (ids < code_offset), a code step only its category's
    contiguous codes, so each row is drawn over that slice, not the whole vocabulary. Every row takes
    the same path whatever its neighbours, so this keeps batch independence.
    """
    u = u.to(logits.device)
    if windows is None or in_category is None or category is None or not layout.hierarchical:
        masked = mask_logits(logits, allowed, layout)
        tok = sample_from_logits(masked, u, opts.temperature, opts.top_k, opts.top_p)
        if opts.code_sampler == "frequency" and freq_logits is not None and in_category is not None and bool(in_category.any()):
            rows = in_category.nonzero().squeeze(1)
            fm = mask_logits(freq_logits.expand(rows.numel(), -1), allowed[rows], layout)
            tok[rows] = sample_from_logits(fm, u[rows], 1.0, 0, 1.0)
        return tok
    co = layout.code_offset
    tok = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    a = (~in_category).nonzero().squeeze(1)
    if a.numel():  # specials and categories: columns [0, code_offset)
        tok[a] = draw_head(logits[a, :co], allowed[a, :co], layout, u[a], opts)
    b = in_category.nonzero().squeeze(1)
    if b.numel():  # the chosen category's codes: a window of `width` columns from its first code
        idx, inside = window_index(windows, category[b], logits.shape[1])
        ok = allowed[b].gather(1, idx) & inside  # columns past the category are not allowed codes of it
        tok[b] = draw_codes(logits[b].gather(1, idx), ok, idx, layout, u[b], opts, freq_logits)
    return tok


def window_index(windows: tuple[torch.Tensor, int], category: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, width) token ids of each row's window (its category's first code onwards, clamped to the
    vocabulary) and (n, width) bool: the id is really in the vocabulary."""
    lo, width = windows
    idx = lo[category][:, None] + torch.arange(width, device=category.device)
    return idx.clamp(max=vocab_size - 1), idx < vocab_size


def draw_head(logits: torch.Tensor, ok: torch.Tensor, layout: TokenLayout, u: torch.Tensor, opts: SamplingOptions) -> torch.Tensor:
    """Hierarchical draw over the columns before the codes (specials, categories): (n, code_offset) -> token ids."""
    return sample_from_logits(mask_logits(logits, ok, layout), u, opts.temperature, opts.top_k, opts.top_p)


def draw_codes(logits: torch.Tensor | None, ok: torch.Tensor, idx: torch.Tensor, layout: TokenLayout, u: torch.Tensor,
               opts: SamplingOptions, freq_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Hierarchical draw of a code in each row's window idx (n, w): `logits` (n, w) of those ids (unused,
    may be None, with code_sampler="frequency"), `ok` (n, w) which of them are allowed -> token ids."""
    if opts.code_sampler == "frequency" and freq_logits is not None:
        col = sample_from_logits(mask_logits(freq_logits[idx], ok, layout, closing=False), u, 1.0, 0, 1.0)
    else:
        col = sample_from_logits(mask_logits(logits, ok, layout, closing=False), u, opts.temperature, opts.top_k, opts.top_p)
    return idx.gather(1, col[:, None]).squeeze(1)


@dataclass
class _Group:
    """Rows decoded together, all at position `pos` (index after <s> of the next token to draw), one
    entry per batch row in every field. Between two steps either `h` (decoder output for the next draw)
    is set, or `tok` (the last drawn tokens, not yet fed to the decoder)."""

    pos: int
    ids: torch.Tensor  # (b,) long: row in the caller's lists, -1 for padding
    keys: np.ndarray  # (b,) uint64 random streams
    forced: torch.Tensor  # (b, w) long: forced token at each index after <s>, -1 for none
    state: RowState
    enc: EncoderState
    past: EncoderDecoderCache  # self-attention part: promptbart.PreallocatedCache
    age: torch.Tensor
    sex: torch.Tensor
    tok: torch.Tensor | None
    h: torch.Tensor | None

    def live(self) -> int:
        """Real rows not finished."""
        return int(((self.state.phase != DONE) & (self.ids >= 0)).sum())

    def take(self, idx: torch.Tensor, model) -> _Group:
        """Keep batch rows idx (in place where it can: see RowState.compact); between steps only."""
        self.ids, self.forced, self.age, self.sex, self.tok = (x[idx] for x in (self.ids, self.forced, self.age, self.sex, self.tok))
        self.keys = self.keys[idx.cpu().numpy()]
        self.state = self.state.compact(idx)
        self.past, self.enc = model.select(self.past, self.enc, idx)
        return self

    def join(self, other: _Group, model) -> None:
        """Add the live rows of `other`, a group at the same position (between steps, tok set in both)."""
        live = ((other.state.phase != DONE) & (other.ids >= 0)).nonzero().squeeze(1)
        if live.numel() < other.ids.numel():
            other.take(live, model)
        w = max(self.forced.shape[1], other.forced.shape[1])
        self.forced = torch.cat([torch.nn.functional.pad(f, (0, w - f.shape[1]), value=-1) for f in (self.forced, other.forced)])
        self.ids, self.age, self.sex, self.tok = (torch.cat([a, b]) for a, b in (
            (self.ids, other.ids), (self.age, other.age), (self.sex, other.sex), (self.tok, other.tok)))
        self.keys = np.concatenate([self.keys, other.keys])
        self.state = RowState(**{k: torch.cat([v, getattr(other.state, k)]) for k, v in self.state.__dict__.items()})
        self.past, self.enc = model.join(self.past, self.enc, other.past, other.enc)


class Sampler:
    """A loaded model ready to generate: token layout, the rules folded over its vocabulary (once),
    training code frequencies for the "frequency" stage-2 sampler."""

    def __init__(self, model, vocab, config, device: str | torch.device = "cpu"):
        from model.rules import allowed_matrix

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab, self.config = vocab, config
        self.layout = TokenLayout.of(vocab, hierarchical=config.mode == "hierarchical")
        self.rules = allowed_matrix(vocab.tokens)  # specials match no rule: always allowed
        counts = torch.as_tensor(np.asarray(vocab.code_counts, dtype=np.float64), dtype=torch.float32)
        freq = torch.full((len(vocab),), -torch.inf)
        freq[vocab.code_offset:] = torch.log(counts)  # zero counts -> -inf (never drawn)
        self.freq_logits = freq.to(self.device)
        w = category_windows(self.layout)
        self.windows = (torch.as_tensor(w[0], device=self.device), w[1]) if w is not None else None
        # sliced LM head (hierarchical, contiguous categories): codes in each category (by category token id)
        # and the window widths its code steps are grouped by (powers of two, then the widest category)
        self.sliced = self.windows is not None and self.layout.hierarchical
        if self.sliced:
            cc = self.layout.code_category[self.layout.code_offset:]
            self.cat_sizes = torch.as_tensor(np.bincount(cc, minlength=len(vocab)), device=self.device)
            width, b = self.windows[1], max(4, -(-BMM_MIN_MACS // config.d_model))
            self.buckets: list[tuple[int, int]] = []  # (largest category of the group, columns computed)
            while b < width:
                self.buckets.append((b, b))
                b *= 2
            self.buckets.append((width, max(width, b)))

    @classmethod
    def from_bundle(cls, bundle, device="cpu") -> Sampler:
        """bundle: (model, vocab, tokenizer, config) as checkpoint.load_checkpoint returns, or a Sampler."""
        if isinstance(bundle, Sampler):
            return bundle
        model, vocab, _, config = bundle
        # the worker calls generate_cohort once per batch: fold the rules over the vocabulary once per model
        cache = model.__dict__.setdefault("_promptehr_samplers", {})
        key = str(torch.device(device))
        if key not in cache:
            cache[key] = cls(model, vocab, config, device)
        return cache[key]

    def limits(self, max_visits: int | None = None, max_codes_per_visit: int | None = None, n_forced: int = 0) -> Limits:
        d = Limits()
        return Limits(max_visits=max_visits or d.max_visits,
                      max_codes_per_visit=max(max_codes_per_visit or d.max_codes_per_visit, n_forced),
                      max_length=self.config.max_length)

    def code_tokens(self, codes) -> list[int]:
        """Decoder tokens of codes in an open visit: K(c) c per code (hierarchical) or c (flat)."""
        out = []
        for c in codes:
            tid = self.vocab.code_id(c)
            if tid is None:
                raise ValueError(f"code {c!r} is not in the model's vocabulary")
            out += [self.vocab.category_token_of(tid), tid] if self.layout.hierarchical else [tid]
        return out

    def required_prefix(self, codes) -> list[int]:
        """Forced tokens after <s> that make `codes` the first codes of the first visit."""
        return [self.layout.visit_open] + self.code_tokens(codes) if codes else []

    def record_prefix(self, visits) -> list[int]:
        """Forced tokens after <s> for a partial record: closed visits, the last one left open."""
        out: list[int] = []
        for k, visit in enumerate(visits):
            out += [self.layout.visit_open] + self.code_tokens(visit)
            if k < len(visits) - 1:
                out.append(self.layout.visit_close)
        return out

    def generate(self, ages, sexes, keys, opts: SamplingOptions, forced=None, limits: Limits | None = None,
                 batch_size: int = 256) -> list[list[list[str]]]:
        """Visits (code strings) of one generated record per row."""
        seqs = self.generate_many(ages, sexes, keys, opts, forced, limits, batch_size=batch_size)
        return [self.visits_of(s) for s in seqs]

    def visits_of(self, tokens: list[int]) -> list[list[str]]:
        return tokens_to_visits(tokens, self.layout, self.vocab.tokens)

    def generate_tokens(self, ages, sexes, keys, opts: SamplingOptions, forced=None, limits: Limits | None = None) -> list[list[int]]:
        """Token ids after <s> up to and including </s>, one list per row, all rows in one batch.
        `keys` are row_key()s; `forced` (optional) per row: token ids that must follow <s>."""
        return self.generate_many(ages, sexes, keys, opts, forced, limits, batch_size=max(1, len(ages)))

    @torch.inference_mode()
    def generate_many(self, ages, sexes, keys, opts: SamplingOptions, forced=None, limits: Limits | None = None,
                      batch_size: int = 256, progress=None) -> list[list[int]]:
        """Like generate_tokens for any number of rows, batch_size at a time, without the long tail.

        A batch runs until fewer than 1/STRAGGLERS of the rows it has had are live; while more rows
        wait, those stragglers are set aside as they are (decoder cache and row state included) and join the next
        batch when it reaches their position, so nothing is recomputed. A row's numbers never depend on
        its batch neighbours, so every record is the one an uninterrupted run gives. `progress(done)`
        after each batch.
        """
        n = len(ages)
        forced = [list(f) for f in forced] if forced is not None else [[] for _ in range(n)]
        limits = limits or self.limits()
        log: list[tuple[torch.Tensor, torch.Tensor]] = []  # per step: (rows, their tokens), in step order
        waiting: list[_Group] = []  # stragglers set aside, by position
        nxt = done = 0
        while nxt < n or waiting:
            held = sum(g.live() for g in waiting)  # they join this batch: leave room for them
            take = list(range(nxt, min(nxt + max(0, batch_size - held), n)))
            nxt += len(take)
            group = self._start(take, ages, sexes, keys, forced, limits, log) if take else waiting.pop(0)
            mark = len(log)
            left = self._run(group, waiting, opts, limits, log, stop=nxt < n)
            if left is not None:
                waiting.append(left)
                waiting.sort(key=lambda g: g.pos)
            done += sum(int((t == self.layout.eos).sum()) for _, t in log[mark:])
            if progress is not None:
                progress(done)
        # assemble records once: a row's tokens are logged in step order, so a stable sort by row keeps it
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

    def _start(self, take: list[int], ages, sexes, keys, forced: list[list[int]], limits: Limits, log) -> _Group:
        """A new batch of rows `take`: encoder, the prefix all its rows share in the first decoder call."""
        from model.nn.promptbart import demographics_to_tensors

        L, m, dev = self.layout, self.model, self.device
        n_real = len(take)
        # pad the batch to MIN_ROWS with copies of its first row (outputs dropped): see the module docstring
        rows = take + [take[0]] * max(0, MIN_ROWS - n_real)
        n = len(rows)
        ages, sexes, fr = [ages[i] for i in rows], [sexes[i] for i in rows], [forced[i] for i in rows]
        age_t, sex_t = demographics_to_tensors(ages, sexes, self.config, dev)
        allowed = torch.from_numpy(self.rules.mask(np.asarray(sexes), np.asarray(ages, dtype=float))).to(dev)
        state = init_state(L, allowed)
        enc = self._encode_demographics(age_t, sex_t)  # prompts only
        ids = torch.tensor(take + [-1] * (n - n_real), dtype=torch.long, device=dev)  # -1: padding

        # the prefix all rows share goes into the first decoder call; the rest is forced step by step
        common = 0
        while all(len(f) > common and f[common] == fr[0][common] for f in fr):
            common += 1
        prefix = fr[0][:common]
        for t in prefix:  # forced tokens must respect the grammar and the rules too
            tok = torch.full((n,), t, dtype=torch.long, device=dev)
            state = advance(state, tok, L, limits)
            log.append((ids[:n_real], tok[:n_real]))
        longest = max(len(f) for f in fr)
        table = torch.full((n, max(longest, 1)), -1, dtype=torch.long)  # forced token at each index after <s>, or -1
        for i, f in enumerate(fr):
            table[i, : len(f)] = torch.tensor(f, dtype=torch.long)
        first = torch.tensor([[L.bos] + prefix] * n, dtype=torch.long, device=dev)  # (n, 1 + common)
        # room for the prompts, <s>, the forced tokens and some more in the self-attention cache (it grows)
        hidden, past = m.decoder_hidden(first, enc, age_t, sex_t, cache_capacity=m.n_prompts + 1 + longest + 32)
        keys = np.asarray([keys[i] for i in rows], dtype=np.uint64)
        return _Group(1 + common, ids, keys, table.to(dev), state, enc, past, age_t, sex_t, None, hidden[:, -1])

    def _run(self, g: _Group, waiting: list[_Group], opts: SamplingOptions, limits: Limits, log,
             stop: bool) -> _Group | None:
        """Step batch `g` until its rows are done, or, with `stop`, until fewer than 1/STRAGGLERS of the
        rows it has had are live: those come back as a group to set aside. Groups in `waiting` join it at
        their position."""
        L, m = self.layout, self.model
        size = g.live()  # real rows it has had
        while True:
            if g.h is None:
                hidden, g.past = m.decoder_hidden(g.tok[:, None], g.enc, g.age, g.sex, g.past)  # (b, 1, D)
                g.h = hidden[:, -1]
            u = torch.from_numpy(uniforms(g.keys, g.pos)).to(g.h.device)
            if self.sliced:
                tok, ok = self._choose_sliced(g.h, g.state, limits, u, opts), None
            else:
                ok = allowed_next(g.state, L, limits)
                tok = choose(m.lm_head(g.h), ok, L, u, opts, self.freq_logits, g.state.phase == CATEGORY, g.state.category,
                             self.windows)
            if g.pos - 1 < g.forced.shape[1]:
                tok = self._apply_forced(tok, g.ids, g.forced[:, g.pos - 1], g.state, limits, ok)
            emitting = (g.state.phase != DONE) & (g.ids >= 0)  # finished rows kept as padding emit <pad>
            g.state = advance(g.state, tok, L, limits, check=False, inplace=True)
            log.append((g.ids[emitting], tok[emitting]))
            g.pos, g.tok, g.h = g.pos + 1, tok, None
            for other in [w for w in waiting if w.pos == g.pos]:  # stragglers set aside at this position
                waiting.remove(other)
                size += other.live()
                g.join(other, m)
            done = g.state.phase == DONE
            live = (~done) & (g.ids >= 0)
            real_live = int(live.sum())
            if real_live == 0:
                return None
            if stop and STRAGGLERS * real_live < size:  # set the stragglers aside (finished rows pad to MIN_ROWS)
                keep = self._rows_to_keep(~live, force=True)
                return g if keep is None else g.take(keep, m)
            keep = self._rows_to_keep(done)
            if keep is not None:
                g.take(keep, m)

    def _encode_demographics(self, age_t: torch.Tensor, sex_t: torch.Tensor):
        """The encoder on prompts only, run once per distinct (age, sex) of the batch (it depends on nothing
        else), at least MIN_ROWS rows so every row gets the bits a whole batch gives it."""
        from model.nn.promptbart import EncoderState

        key = torch.stack([age_t, sex_t.to(age_t.dtype)], 1)
        uniq, inv = torch.unique(key, dim=0, return_inverse=True)
        if uniq.shape[0] < MIN_ROWS:
            uniq = torch.cat([uniq, uniq[:1].expand(MIN_ROWS - uniq.shape[0], -1)])
        age_u, sex_u = uniq[:, 0].contiguous(), uniq[:, 1].to(sex_t.dtype)
        enc = self.model.encode(torch.zeros(uniq.shape[0], 0, dtype=torch.long, device=age_t.device), None, age_u, sex_u)
        return EncoderState(enc.hidden[inv], enc.mask[inv])

    @staticmethod
    def _rows_to_keep(done: torch.Tensor, force: bool = False) -> torch.Tensor | None:
        """Batch positions to keep after a step: the live rows, topped up with finished ones to MIN_ROWS;
        None when nothing would change (with force, every droppable row goes). In hole-filling order: kept rows among the first n positions
        stay, the kept rows beyond move into the places of dropped ones, so a drop copies (KV cache,
        row state) only about as many rows as it drops."""
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

    def _choose_sliced(self, h: torch.Tensor, state, limits: Limits, u: torch.Tensor, opts: SamplingOptions) -> torch.Tensor:
        """choose() for hierarchical layouts from decoder hidden states h (b, D), computing only the logits
        and masks the draws read: columns [0, code_offset) for rows choosing a special or a category, the
        category's window for rows choosing a code. Each row gets the bits the full LM head gives it (the
        column slice and the per-row products are the same sums, see _window_logits), so the records
        are those of the full-vocabulary path."""
        L, m = self.layout, self.model
        co = L.code_offset
        in_cat = state.phase == CATEGORY
        tok = torch.empty(h.shape[0], dtype=torch.long, device=h.device)
        a = (~in_cat).nonzero().squeeze(1)
        if a.numel():
            pick = a
            if a.numel() < LINEAR_ROWS:  # too few rows for the kernels' usual path: top up with others
                pick = torch.cat([a, in_cat.nonzero().squeeze(1)[: LINEAR_ROWS - a.numel()]])
            logits = m.lm_head_columns(h[pick], co)[: a.numel()]
            tok[a] = draw_head(logits, allowed_head(state, L, limits, a), L, u[a], opts)
        b = in_cat.nonzero().squeeze(1)
        if b.numel():
            cat = state.category[b]
            idx, inside = window_index(self.windows, cat, L.vocab_size)
            ok = allowed_at(state, b, idx, L) & inside
            logits = None if opts.code_sampler == "frequency" else self._window_logits(h[b], cat, idx)
            tok[b] = draw_codes(logits, ok, idx, L, u[b], opts, self.freq_logits)
        return tok

    def _window_logits(self, h: torch.Tensor, cat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(n, width) logits of each row's window idx (columns past the row's category hold anything: no draw
        reads them, they are never allowed).

        Rows are grouped by the smallest power-of-two width covering their category, so a step reads a
        fraction of the weights a full-width window would. The per-row products (bmm) give the bits of the
        full head on CPU when a group has at least 2 rows (one matrix takes another kernel: a lone row is
        computed twice) and at least BMM_MIN_MACS multiply-adds per row (columns are added for that)."""
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

    def _apply_forced(self, tok, rows, col, state, limits, ok=None):
        """Replace draws by forced tokens `col` (B,) where >= 0; a forced token must be allowed too
        (`ok`: this step's allowed_next, or None to work it out for the forced rows only)."""
        idx = (col >= 0).nonzero().squeeze(1)
        if idx.numel() == 0:
            return tok
        val = col[idx]
        good = ok[idx, val] if ok is not None else allowed_tokens(state, idx, val, self.layout, limits)
        if not bool(good.all()):
            bad = int((~good).nonzero()[0, 0])
            raise ValueError(f"forced token {self.vocab.tokens[int(val[bad])]!r} breaks the grammar or a rule "
                             f"for row {int(rows[idx[bad]])}")
        tok = tok.clone()
        tok[idx] = val
        return tok
