"""Corruptions on a fixed seed: structure kept, rates within tolerance, targets and scored positions right."""
from collections import Counter

import numpy as np

from promptehr.model.nn.config import TrainConfig
from promptehr.model.training.corruption import (
    delete_tokens,
    empty_encoder,
    make_example,
    next_visit,
    replace_tokens,
    span_mask,
    split_visits,
    validation_examples,
)
from promptehr.model.tokens.layout import TokenLayout
from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.tokens.vocab import BOS, END_VISIT, EOS, MASK, VISIT, Vocabulary
from tests.test_vocab import toy_patients


def setup(n=200, mode="hierarchical"):
    ps = toy_patients(n, seed=3)
    v = Vocabulary.build(ps)
    tk = Tokenizer(v, mode)
    return [tk.encode(p.visits) for p in ps], TokenLayout.of(v)


def structure(tokens):
    return [t for t in tokens if t in (BOS, EOS, VISIT, END_VISIT)]


def n_content(tokens, layout):
    return sum(t >= layout.category_offset for t in tokens)


def test_span_mask():
    seqs, layout = setup()
    rng = np.random.default_rng(0)
    masked = total = 0
    for s in seqs:
        ex = span_mask(s, rng, layout, ratio=0.3, lam=3.0)
        assert ex.target == s and len(ex.scored) == len(s)
        assert structure(ex.encoder) == structure(s)  # visit markers untouched
        assert not any(a == MASK and b == MASK for a, b in zip(ex.encoder, ex.encoder[1:]))  # one <mask> per run
        hidden = n_content(s, layout) - n_content(ex.encoder, layout)
        assert hidden >= 1 and ex.encoder.count(MASK) >= 1
        assert all(s[i] >= layout.code_offset for i, f in enumerate(ex.scored) if f)
        masked += hidden
        total += n_content(s, layout)
    assert abs(masked / total - 0.3) < 0.05


def test_span_lengths_follow_poisson():
    # one long visit: spans are runs of masked tokens, mean near lambda when few merge
    layout = TokenLayout(vocab_size=1100, bos=BOS, pad=1, eos=EOS, unk=3, visit_open=VISIT, visit_close=END_VISIT, mask=MASK,
                         category_offset=7, code_offset=100, code_category=np.full(1100, -1))
    s = [BOS, VISIT] + list(range(100, 1100)) + [END_VISIT, EOS]
    ex = span_mask(s, np.random.default_rng(1), layout, ratio=0.1, lam=3.0)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, np.array([t >= 100 for t in s]) & ~np.isin(s, ex.encoder), 0])))[::2]
    assert 2.5 < runs.mean() < 4.5


def test_delete_and_replace_rates():
    seqs, layout = setup()
    rng = np.random.default_rng(0)
    deleted = replaced = total = 0
    for s in seqs:
        d = delete_tokens(s, rng, layout, p=0.15)
        assert structure(d.encoder) == structure(s) and d.target == s
        deleted += len(s) - len(d.encoder)
        r = replace_tokens(s, rng, layout, p=0.15)
        assert len(r.encoder) == len(s) and structure(r.encoder) == structure(s)
        for a, b in zip(s, r.encoder):
            assert (a >= layout.code_offset) == (b >= layout.code_offset)  # codes by codes, categories by categories
            assert (a >= layout.category_offset) == (b >= layout.category_offset)
        replaced += sum(a != b for a, b in zip(s, r.encoder))
        total += n_content(s, layout)
    assert abs(deleted / total - 0.15) < 0.03
    assert abs(replaced / total - 0.15) < 0.03  # a few replacements draw the same token


def test_next_visit_and_empty():
    seqs, layout = setup()
    rng = np.random.default_rng(0)
    multi = [s for s in seqs if s.count(VISIT) >= 2]
    single = [s for s in seqs if s.count(VISIT) == 1]
    assert next_visit(single[0], rng, layout) is None
    s = multi[0]
    visits = split_visits(s)
    ex = next_visit(s, rng, layout, k=1)
    assert ex.encoder == [BOS] + visits[0] + [MASK, EOS]
    assert ex.target == s
    scored_tokens = [t for t, f in zip(ex.target, ex.scored) if f]
    assert scored_tokens == [t for t in visits[1] if t >= layout.code_offset]
    e = empty_encoder(s)
    assert e.encoder == [] and e.target == s and not any(e.scored)


def test_objective_mix_and_determinism():
    seqs, layout = setup()
    cfg = TrainConfig()
    counts = Counter(make_example(s, np.random.default_rng([0, i]), layout, cfg).objective
                     for i, s in enumerate(seqs * 5))
    share = {k: v / sum(counts.values()) for k, v in counts.items()}
    assert set(share) == {"mask", "delete", "replace", "next_visit", "empty"}
    assert abs(share["empty"] - 0.2) < 0.06
    a = validation_examples(seqs, layout, cfg, seed=5)
    b = validation_examples(seqs, layout, cfg, seed=5)
    assert [(i, e.encoder, e.target) for i, e in a] == [(i, e.encoder, e.target) for i, e in b]
