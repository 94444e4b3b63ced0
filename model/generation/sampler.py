"""Batched sampler on the KV cache: many patients at once, each with its own random stream.

How a batch is generated (see `Sampler.generate_many`):
- The encoder runs once, on an empty input: demographics prompts only (once per distinct age and sex).
  Training keeps a share of examples with an empty encoder input (DESIGN section 4), so this is in
  distribution. Required codes and reconstruction prefixes are not put in the encoder: they are forced
  as the first decoder tokens, which both conditions everything after them and guarantees they are in
  the record.
- The first decoder call puts the decoder prompt, `<s>` and the forced prefix common to all rows into
  the KV cache (model/nn/kv_cache.py's PreallocatedCache: written in place, no copy per step); every
  later step feeds one token per live row. Finished rows leave the batch, stragglers are set aside and
  join the next batch (model/generation/batch.py, which also keeps the batch at MIN_ROWS rows or more
  for bit-identical kernels).
- The encoder and decoder run in opts.precision (bfloat16 autocast by default, model/generation/precision.py);
  the LM head and the draws in float32.
- Each step: logits -> constraint mask (model/generation/constraints.py) -> temperature / top-k / top-p
  -> one draw per row by inverse CDF (draw.py) with the row's uniform at that position (streams.py).
  Hierarchical models compute only the logits a draw reads (head.py).

model/generation/reference.py is this sampler written plainly, one patient at a time with the model's
logits at every step: the specification; the records are its records. One thing in a row's bits can
come from its batch: how many of its forced tokens go into the first decoder call (attention over
several new positions rounds otherwise than one position per call, in the last bits). That is the
prefix all rows of the batch share: for a cohort, whose rows all force the same required codes, the
whole prefix at any batch size; rows with prefixes of their own (reconstruction) get the same tokens
unless a uniform falls within those last bits of a CDF boundary.
"""
from __future__ import annotations

import numpy as np
import torch

from promptehr.model.generation.batch import MIN_ROWS, STRAGGLERS, Group, records, rows_to_keep
from promptehr.model.generation.constraints import (
    DONE,
    Limits,
    advance,
    allowed_next,
    allowed_tokens,
    init_state,
)
from promptehr.model.generation.draw import SamplingOptions, draw
from promptehr.model.generation.options import DEFAULT_BATCH_SIZE
from promptehr.model.generation.head import SlicedHead
from promptehr.model.generation.precision import decoder_precision
from promptehr.model.generation.streams import TIME, row_key, uniforms
from promptehr.model.nn.promptbart import EncoderState, demographics_to_tensors
from promptehr.model.rules import allowed_matrix
from promptehr.model.tokens import time_bins
from promptehr.model.tokens.layout import TokenLayout
from promptehr.model.tokens.tokenizer import Tokenizer


class Sampler:
    """A loaded model ready to generate: token layout, the rules folded over its vocabulary (once),
    training code frequencies for the "frequency" stage-2 sampler, the sliced LM head (hierarchical)."""

    def __init__(self, model, vocab, config, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab, self.config = vocab, config
        self.layout = TokenLayout.of(vocab, hierarchical=config.mode == "hierarchical")
        self.tokenizer = Tokenizer(vocab, "hierarchical" if self.layout.hierarchical else "flat")
        self.rules = allowed_matrix(vocab.tokens)  # specials match no rule: always allowed
        # time bins no training record had: never drawn (label smoothing gives each a little mass, and 1.2%
        # of a DE-SynPUF sample-1 cohort's stays fell in such bins, up to 18 years, where train's longest was 35 days)
        self.unseen_time = np.zeros(len(vocab), dtype=bool)
        self.unseen_time[vocab.gap_offset: vocab.category_offset] = np.asarray(vocab.time_counts) == 0
        counts = torch.as_tensor(np.asarray(vocab.code_counts, dtype=np.float64), dtype=torch.float32)
        freq = torch.full((len(vocab),), -torch.inf)
        freq[vocab.code_offset:] = torch.log(counts)  # zero counts -> -inf (never drawn)
        self.freq_logits = freq.to(self.device)
        self.head = SlicedHead(self.model, self.layout, self.freq_logits, self.device) if self.layout.hierarchical else None

    def allowed_mask(self, sexes, ages) -> np.ndarray:
        """(B, V) bool: the tokens each patient may ever emit (the sex/age rules; no unseen time bin)."""
        return self.rules.mask(np.asarray(sexes), np.asarray(ages, dtype=float)) & ~self.unseen_time

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

    # ---- forced prefixes and records ------------------------------------------------------------
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

    def record_prefix(self, visits, visit_days=None, los_days=None) -> list[int]:
        """Forced tokens after <s> for a partial record: closed visits, the last one left open. A model
        with time forces the record's times too (the gap before each later visit, the stay closing each
        closed visit), so the record needs them: ValueError without."""
        L, v = self.layout, self.vocab
        if len(visits) > 1 and (L.gaps and visit_days is None or L.stays and los_days is None):  # (one open visit has no time)
            raise ValueError("this model learned time: a partial record to complete needs its visits' days"
                             + (" and stays" if L.stays else ""))
        closed = len(visits) > 1
        gaps = time_bins.bin_of(np.diff(visit_days), v.time.edges).tolist() if L.gaps and closed else []
        stays = time_bins.bin_of(los_days, v.time.edges).tolist() if L.stays and closed else []
        out: list[int] = []
        for k, visit in enumerate(visits):
            out += ([self._seen(v.gap_token(gaps[k - 1]))] if k and L.gaps else []) + [L.visit_open] + self.code_tokens(visit)
            if k < len(visits) - 1:
                out += ([self._seen(v.stay_token(stays[k]))] if L.stays else []) + [L.visit_close]
        return out

    def _seen(self, token: int) -> int:
        """A time token, or the nearest bin of its kind that training records had (the sampler emits no
        other): a held-out stay longer than any in train is forced as the longest train had."""
        if not self.unseen_time[token]:
            return token
        lo, hi = (self.vocab.gap_offset, self.vocab.stay_offset) if self.vocab.is_gap(token) else \
            (self.vocab.stay_offset, self.vocab.category_offset)
        seen = lo + np.flatnonzero(~self.unseen_time[lo:hi])
        return int(seen[np.argmin(np.abs(seen - token))])

    def visits_of(self, tokens: list[int]) -> list[list[str]]:
        """Visits (code strings) of a generated record: the tokenizer's decoding (a sampled record is
        well formed, so none of its tolerances apply)."""
        return self.tokenizer.decode(tokens)

    def record_of(self, tokens: list[int], seed: int, index: int) -> tuple[list[list[str]], list[int] | None, list[int] | None]:
        """(visits, visit_days, los_days) of patient `index`'s generated record; days None where the
        model has no such tokens. A bin becomes days by a uniform draw inside it (time_bins.days_in) from
        the patient's time stream (streams.TIME): position 2k for visit k's gap, 2k + 1 for its stay."""
        visits, gaps, stays = self.tokenizer.decode_record(tokens)
        L, n = self.layout, len(visits)
        if not (L.gaps or L.stays):
            return visits, None, None
        edges = self.vocab.time.edges
        u = uniforms(np.asarray([row_key(seed, index, TIME)], dtype=np.uint64), np.arange(2 * n))
        days = los = None
        if L.gaps:
            step = time_bins.days_in([g for g in gaps[1:]], u[2::2], edges) if n > 1 else np.zeros(0, np.int64)
            days = np.concatenate([[0], np.cumsum(step)]).astype(int).tolist()
        if L.stays:
            los = time_bins.days_in(stays, u[1::2], edges).astype(int).tolist()
        return visits, days, los

    # ---- generation -----------------------------------------------------------------------------
    def generate_tokens(self, ages, sexes, keys, opts: SamplingOptions, forced=None, limits: Limits | None = None) -> list[list[int]]:
        """Token ids after <s> up to and including </s>, one list per row, all rows in one batch.
        `keys` are streams.row_key()s; `forced` (optional) per row: token ids that must follow <s>."""
        return self.generate_many(ages, sexes, keys, opts, forced, limits, batch_size=max(1, len(ages)))

    @torch.inference_mode()
    def generate_many(self, ages, sexes, keys, opts: SamplingOptions, forced=None, limits: Limits | None = None,
                      batch_size: int = DEFAULT_BATCH_SIZE, progress=None) -> list[list[int]]:
        """Like generate_tokens for any number of rows, batch_size at a time, without the long tail.

        A batch runs until fewer than 1/STRAGGLERS of the rows it has had are live; while more rows
        wait, those stragglers are set aside as they are (decoder cache and row state included) and join the next
        batch when it reaches their position, so nothing is recomputed. A row's draws never depend on
        its batch neighbours (but for the forced prefix its batch shares: see the module docstring), so
        every record is the one an uninterrupted run gives. `progress(done)` after each batch.
        """
        n = len(ages)
        forced = [list(f) for f in forced] if forced is not None else [[] for _ in range(n)]
        limits = limits or self.limits()
        log: list[tuple[torch.Tensor, torch.Tensor]] = []  # per step: (rows, their tokens), in step order
        waiting: list[Group] = []  # stragglers set aside, by position
        nxt = done = 0
        while nxt < n or waiting:
            held = sum(g.live() for g in waiting)  # they join this batch: leave room for them
            take = list(range(nxt, min(nxt + max(0, batch_size - held), n)))
            nxt += len(take)
            group = self._start(take, ages, sexes, keys, forced, limits, log, opts) if take else waiting.pop(0)
            mark = len(log)
            left = self._run(group, waiting, opts, limits, log, stop=nxt < n)
            if left is not None:
                waiting.append(left)
                waiting.sort(key=lambda g: g.pos)
            done += sum(int((t == self.layout.eos).sum()) for _, t in log[mark:])
            if progress is not None:
                progress(done)
        return records(log, n)

    def _start(self, take: list[int], ages, sexes, keys, forced: list[list[int]], limits: Limits, log,
               opts: SamplingOptions) -> Group:
        """A new batch of rows `take`: encoder, the prefix all its rows share in the first decoder call."""
        L, m, dev = self.layout, self.model, self.device
        n_real = len(take)
        # pad the batch to MIN_ROWS with copies of its first row (outputs dropped): see model/generation/batch.py
        rows = take + [take[0]] * max(0, MIN_ROWS - n_real)
        n = len(rows)
        ages, sexes, fr = [ages[i] for i in rows], [sexes[i] for i in rows], [forced[i] for i in rows]
        age_t, sex_t = demographics_to_tensors(ages, sexes, self.config, dev)
        state = init_state(L, torch.from_numpy(self.allowed_mask(sexes, ages)).to(dev))
        with decoder_precision(opts.precision, dev):
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
        with decoder_precision(opts.precision, dev):
            hidden, past = m.decoder_hidden(first, enc, age_t, sex_t, cache_capacity=m.n_prompts + 1 + longest + 32)
        keys = np.asarray([keys[i] for i in rows], dtype=np.uint64)
        return Group(1 + common, ids, keys, table.to(dev), state, enc, past, age_t, sex_t, None, hidden[:, -1].float())

    def _run(self, g: Group, waiting: list[Group], opts: SamplingOptions, limits: Limits, log,
             stop: bool) -> Group | None:
        """Step batch `g` until its rows are done, or, with `stop`, until fewer than 1/STRAGGLERS of the
        rows it has had are live: those come back as a group to set aside. Groups in `waiting` join it at
        their position."""
        L, m = self.layout, self.model
        size = g.live()  # real rows it has had
        while True:
            if g.h is None:
                with decoder_precision(opts.precision, self.device):
                    hidden, g.past = m.decoder_hidden(g.tok[:, None], g.enc, g.age, g.sex, g.past)  # (b, 1, D)
                g.h = hidden[:, -1].float()  # the head and the draws in float32 (precision.py)
            u = torch.from_numpy(uniforms(g.keys, g.pos)).to(g.h.device)
            if self.head is not None:  # hierarchical: only the logits the draws read
                tok, ok = self.head.choose(g.h, g.state, limits, u, opts), None
            else:
                ok = allowed_next(g.state, L, limits)
                tok = draw(m.lm_head(g.h), ok, L, u, opts)
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
                keep = rows_to_keep(~live, force=True)
                return g if keep is None else g.take(keep, m)
            keep = rows_to_keep(done)
            if keep is not None:
                g.take(keep, m)

    def _encode_demographics(self, age_t: torch.Tensor, sex_t: torch.Tensor) -> EncoderState:
        """The encoder on prompts only, run once per distinct (age, sex) of the batch (it depends on nothing
        else), at least MIN_ROWS rows so every row gets the bits a whole batch gives it."""
        key = torch.stack([age_t, sex_t.to(age_t.dtype)], 1)
        uniq, inv = torch.unique(key, dim=0, return_inverse=True)
        if uniq.shape[0] < MIN_ROWS:
            uniq = torch.cat([uniq, uniq[:1].expand(MIN_ROWS - uniq.shape[0], -1)])
        age_u, sex_u = uniq[:, 0].contiguous(), uniq[:, 1].to(sex_t.dtype)
        enc = self.model.encode(torch.zeros(uniq.shape[0], 0, dtype=torch.long, device=age_t.device), None, age_u, sex_u)
        return EncoderState(enc.hidden[inv], enc.mask[inv])

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
