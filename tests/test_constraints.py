"""Property tests: whatever the logits, constrained decoding never breaks the grammar or a rule."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from promptehr.model.generation.constraints import (
    DONE,
    Limits,
    advance,
    allowed_at,
    allowed_head,
    allowed_next,
    allowed_tokens,
    init_state,
    mask_logits,
    select_in_place,
)
from promptehr.model.generation.draw import SamplingOptions, window_index
from promptehr.model.generation.draw import (
    draw as draw_flat,  # `draw` is hypothesis' name in the strategies below
)
from promptehr.model.generation.head import SlicedHead
from promptehr.model.generation.streams import uniforms
from promptehr.model.tokens.layout import TokenLayout

N_SPECIAL = 7


def make_layout(n_cat: int, code_cats: list[int], hierarchical: bool, n_gaps: int = 0, n_stays: int = 0) -> TokenLayout:
    """[specials | n_gaps gap tokens | n_stays stay tokens | categories | codes], as model/tokens/vocab.py lays them out."""
    co = N_SPECIAL + n_gaps + n_stays  # category offset
    V = co + n_cat + len(code_cats)
    cc = np.full(V, -1, dtype=np.int64)
    cc[co + n_cat:] = np.asarray(code_cats, dtype=np.int64) + co
    return TokenLayout(vocab_size=V, bos=0, pad=1, eos=2, unk=3, visit_open=4, visit_close=5, mask=6,
                       category_offset=co, code_offset=co + n_cat, code_category=cc, hierarchical=hierarchical,
                       gap_offset=N_SPECIAL, n_gaps=n_gaps, stay_offset=N_SPECIAL + n_gaps, n_stays=n_stays)


def check_sequence(seq: list[int], layout: TokenLayout, limits: Limits, allowed: np.ndarray) -> None:
    """An independent reading of the grammar and rules (not the state machine under test)."""
    assert seq[0] == layout.bos and seq[-1] == layout.eos, seq
    assert len(seq) <= limits.max_length
    body = seq[1:-1]
    if not body:  # the empty record is only for a patient with no usable code, or no room for a visit
        usable = allowed[layout.code_offset:]
        if layout.hierarchical:
            usable = usable & allowed[layout.code_category[layout.code_offset:]]
        assert not usable.any() or limits.max_length < (6 if layout.hierarchical else 5) + int(layout.stays)
        return
    visits, cur, pending_cat = [], None, None
    gap = stay = False  # the time tokens just before (model/tokens/tokenizer.py: G <v> ... S </v>)
    for t in body:
        if layout.gap_offset <= t < layout.gap_offset + layout.n_gaps:
            assert cur is None and visits and not gap, "a gap outside the place before a later visit"
            gap = True
        elif layout.stay_offset <= t < layout.stay_offset + layout.n_stays:
            assert cur and pending_cat is None and not stay, "a stay outside the end of a non-empty visit"
            stay = True
        elif t == layout.visit_open:
            assert cur is None, "nested <v>"
            assert gap == (layout.gaps and bool(visits)), "a later visit without its gap (or the first with one)"
            cur, gap = [], False
        elif t == layout.visit_close:
            assert cur, "closing an empty or unopened visit"
            assert pending_cat is None, "category without its code"
            assert stay == layout.stays, "a visit closed without its stay"
            visits.append(cur)
            cur, stay = None, False
        elif layout.category_offset <= t < layout.code_offset:
            assert layout.hierarchical and cur is not None and pending_cat is None and not stay
            assert allowed[t], "forbidden category"
            pending_cat = t
        elif t >= layout.code_offset:
            assert cur is not None and not stay, "code outside a visit (or after its stay)"
            assert allowed[t], "rule broken"
            assert t not in cur, "code twice in a visit"
            if layout.hierarchical:
                assert pending_cat == layout.code_category[t], "code outside its category"
                pending_cat = None
            cur.append(t)
        else:
            raise AssertionError(f"special token {t} inside the record")
    assert cur is None and not gap, "record ends inside a visit (or after a gap)"
    assert 1 <= len(visits) <= limits.max_visits
    assert all(len(v) <= limits.max_codes_per_visit for v in visits)


class LogitsAsHidden:
    """Stands in for PromptBart in SlicedHead: its "hidden states" are the logits themselves, so the
    sampler's own hierarchical draws run on any logits."""

    config = SimpleNamespace(d_model=64)

    @staticmethod
    def lm_head_columns(h, stop):
        return h[:, :stop]

    @staticmethod
    def lm_head_at(h, idx):
        return h.gather(1, idx)


def decode(layout, limits, allowed, logits_fn, opts):
    """The sampler's steps on logits_fn's logits: the sliced head's draws (hierarchical), draw.draw (flat)."""
    state = init_state(layout, torch.as_tensor(allowed))
    B = allowed.shape[0]
    seqs = [[layout.bos] for _ in range(B)]
    keys = np.arange(B, dtype=np.uint64) * np.uint64(7919) + np.uint64(1)
    freq = torch.log(torch.arange(layout.vocab_size, dtype=torch.float32) % 5)
    head = SlicedHead(LogitsAsHidden(), layout, freq, torch.device("cpu")) if layout.hierarchical else None
    for step in range(limits.max_length + 2):
        if bool((state.phase == DONE).all()):
            break
        ok = allowed_next(state, layout, limits)
        assert ok.any(1).all()
        check_sliced_masks(state, layout, limits, ok, head.windows if head is not None else None)
        u = torch.as_tensor(uniforms(keys, step))
        logits = logits_fn(step, B)
        tok = head.choose(logits, state, limits, u, opts) if head is not None else draw_flat(logits, ok, layout, u, opts)
        assert ok.gather(1, tok[:, None]).all()
        state = advance(state, tok, layout, limits, allowed=ok)
        for i in range(B):
            if seqs[i][-1] != layout.eos:
                seqs[i].append(int(tok[i]))
    assert bool((state.phase == DONE).all()), "did not terminate within max_length"
    return seqs


def check_sliced_masks(state, layout, limits, ok, windows):
    """The sampler's sliced masks (head columns; a category's window; single tokens) are allowed_next's, cut."""
    B, V = ok.shape
    rows, toks = torch.arange(B).repeat_interleave(V), torch.arange(V).repeat(B)  # every (row, token)
    assert torch.equal(allowed_tokens(state, rows, toks, layout, limits), ok.reshape(-1))
    if not layout.hierarchical:
        return
    assert torch.equal(allowed_head(state, layout, limits), ok[:, : layout.code_offset])
    rows = (state.phase != 2).nonzero().squeeze(1)  # the rows the sampler asks about
    assert torch.equal(allowed_head(state, layout, limits, rows), ok[rows, : layout.code_offset])
    rows = (state.phase == 2).nonzero().squeeze(1)
    if windows is not None and rows.numel():
        idx, inside = window_index(windows, state.category[rows], layout.vocab_size)
        assert torch.equal(allowed_at(state, rows, idx, layout) & inside, ok[rows].gather(1, idx) & inside)
        # nothing of the category lies outside its window
        assert int(ok[rows, layout.code_offset:].sum()) == int((ok[rows].gather(1, idx) & inside).sum())


@st.composite
def problems(draw):
    n_cat = draw(st.integers(1, 6))
    code_cats = draw(st.lists(st.integers(0, n_cat - 1), min_size=1, max_size=14))
    hier = draw(st.booleans())
    if hier or draw(st.booleans()):  # flat layouts may be in any order; the hierarchical head needs them sorted
        code_cats = sorted(code_cats)  # contiguous categories, as the real vocabulary has them
    n_gaps, n_stays = draw(st.sampled_from([(0, 0), (0, 0), (2, 2), (3, 0), (0, 1)]))  # time: none, both, gaps, stays
    layout = make_layout(n_cat, code_cats, hier, n_gaps, n_stays)
    limits = Limits(max_visits=draw(st.integers(1, 4)), max_codes_per_visit=draw(st.integers(1, 5)),
                    max_length=draw(st.integers(5, 40)))
    B = draw(st.integers(1, 4))
    allowed = np.array(draw(st.lists(st.lists(st.booleans(), min_size=layout.vocab_size, max_size=layout.vocab_size),
                                     min_size=B, max_size=B)))
    kind = draw(st.sampled_from(["normal", "neginf", "nan", "posinf", "huge", "adversarial", "mixed"]))
    seed = draw(st.integers(0, 2**31 - 1))
    opts = SamplingOptions(temperature=draw(st.sampled_from([0.3, 1.0, 2.5])), top_p=draw(st.sampled_from([0.5, 0.95, 1.0])),
                           top_k=draw(st.sampled_from([0, 1, 3])), code_sampler="model")
    return layout, limits, allowed, kind, seed, opts


def logits_maker(kind, seed, layout, allowed):
    g = torch.Generator().manual_seed(seed)
    V = layout.vocab_size
    bad = torch.as_tensor(~allowed)

    def fn(step, B):
        x = torch.randn(B, V, generator=g) * 5
        if kind == "neginf":
            return torch.full((B, V), -torch.inf)
        if kind == "nan":
            return torch.full((B, V), torch.nan)
        if kind == "posinf":
            return torch.where(torch.rand(B, V, generator=g) < 0.3, torch.inf, x)
        if kind == "huge":
            return torch.full((B, V), 3e38) * torch.sign(x)
        if kind == "adversarial":  # everything the rules or grammar forbid is the model's favourite
            x = torch.where(bad, 1e9, -1e9)
            x[:, [layout.bos, layout.pad, layout.unk, layout.mask]] = 1e10
            x[:, layout.visit_open] = 1e10  # keep opening visits / never close
            return x
        if kind == "mixed":
            choice = torch.randint(0, 4, (B, V), generator=g)
            return torch.stack([x, torch.full_like(x, -torch.inf), torch.full_like(x, torch.nan), torch.full_like(x, torch.inf)])[
                choice, torch.arange(B)[:, None], torch.arange(V)[None, :]]
        return x

    return fn


@settings(max_examples=150, deadline=None)
@given(problems())
def test_any_logits_give_valid_records(problem):
    layout, limits, allowed, kind, seed, opts = problem
    allowed[:, :N_SPECIAL] = True
    seqs = decode(layout, limits, allowed, logits_maker(kind, seed, layout, allowed), opts)
    for seq, row in zip(seqs, allowed):
        check_sequence(seq, layout, limits, row)


@settings(max_examples=40, deadline=None)
@given(problems(), st.integers(0, 2**31 - 1))
def test_frequency_code_sampler_stays_valid(problem, seed):
    layout, limits, allowed, kind, _, opts = problem
    allowed[:, :N_SPECIAL] = True
    opts = SamplingOptions(opts.temperature, opts.top_p, opts.top_k, code_sampler="frequency")
    seqs = decode(layout, limits, allowed, logits_maker(kind, seed, layout, allowed), opts)
    for seq, row in zip(seqs, allowed):
        check_sequence(seq, layout, limits, row)


def test_all_neginf_falls_back_to_closing():
    layout = make_layout(2, [0, 0, 1, 1], hierarchical=True)
    limits = Limits(max_visits=3, max_codes_per_visit=3, max_length=30)
    allowed = np.ones((1, layout.vocab_size), dtype=bool)
    seqs = decode(layout, limits, allowed, lambda step, B: torch.full((B, layout.vocab_size), -torch.inf), SamplingOptions())
    # <s> <v> K c </v> </s>: the shortest record, closed as soon as the grammar lets it
    assert len(seqs[0]) == 6 and seqs[0][-2:] == [layout.visit_close, layout.eos]


def test_forbidden_tokens_get_no_mass():
    layout = make_layout(2, [0, 1, 1], hierarchical=False)
    allowed = torch.zeros(2, layout.vocab_size, dtype=torch.bool)
    allowed[:, layout.code_offset + 1] = True
    x = mask_logits(torch.randn(2, layout.vocab_size), allowed, layout)
    assert torch.isfinite(x).sum().item() == 2 and torch.isfinite(x[:, layout.code_offset + 1]).all()


def test_forced_token_that_breaks_a_rule_raises():
    layout = make_layout(1, [0, 0], hierarchical=False)
    limits = Limits()
    allowed = torch.ones(1, layout.vocab_size, dtype=torch.bool)
    allowed[0, layout.code_offset] = False
    s = init_state(layout, allowed)
    s = advance(s, torch.tensor([layout.visit_open]), layout, limits)
    with pytest.raises(ValueError):
        advance(s, torch.tensor([layout.code_offset]), layout, limits)


@pytest.mark.parametrize("seed", range(6))
def test_sliced_masks_on_a_wide_layout(seed):
    # categories of 1-5 codes, long visits: codes already used in the visit sit inside the windows
    layout = make_layout(3, [0, 0, 0, 0, 1, 1, 1, 1, 1, 2], hierarchical=True)
    limits = Limits(max_visits=3, max_codes_per_visit=6, max_length=60)
    allowed = np.random.default_rng(seed).random((5, layout.vocab_size)) < 0.8
    allowed[:, :N_SPECIAL] = True
    seqs = decode(layout, limits, allowed, logits_maker("normal", seed, layout, allowed), SamplingOptions())  # checks the masks
    for seq, row in zip(seqs, allowed):
        check_sequence(seq, layout, limits, row)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.data())
def test_select_in_place_is_index_select(B, data):
    idx = torch.tensor(data.draw(st.lists(st.integers(0, B - 1), min_size=1, max_size=B)), dtype=torch.long)
    x = torch.arange(B * 3).view(B, 3)
    want = x.index_select(0, idx)
    assert torch.equal(select_in_place(x.clone(), idx), want)
