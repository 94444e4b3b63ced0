"""The sampler's pieces: per-patient random streams, the top-k/top-p draw, batch-independence of the
KV-cache sampler, reconstruction and perplexity (on a small random-weight model: mechanics, not quality)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from promptehr.model.evaluation.model_scores import split_half
from promptehr.model.evaluation.scorer import Scorer
from promptehr.model.generation.batch import MIN_ROWS, Group
from promptehr.model.generation.draw import SamplingOptions, sample_from_logits, window_index
from promptehr.model.generation.sampler import Sampler
from promptehr.model.generation.streams import row_key, uniforms
from promptehr.model.nn.config import model_config
from promptehr.model.nn.promptbart import PromptBart, demographics_to_tensors
from promptehr.model.patient import Patient
from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.tokens.vocab import Vocabulary

CODES = ["4019", "25000", "4280", "41401", "5849", "V5861", "E8889", "2724", "486", "5990", "650", "V270", "185", "1749",
         "7793", "42731", "2859", "311", "53081", "2449"]


@pytest.fixture(scope="module")
def sampler():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    vocab = Vocabulary.build([Patient("a", 50, "F", [CODES])])
    cfg = model_config("tiny", vocab_size=len(vocab), code_offset=vocab.code_offset, max_length=64)
    torch.manual_seed(0)
    yield Sampler(PromptBart(cfg).eval(), vocab, cfg)
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def wide_sampler():
    """Categories of up to 14 codes: code steps take windows of several widths."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    codes = [f"250{i:02d}" for i in range(0, 40, 3)] + [f"428{i}" for i in range(10)] + CODES
    vocab = Vocabulary.build([Patient("a", 50, "F", [codes])])
    cfg = model_config("tiny", vocab_size=len(vocab), code_offset=vocab.code_offset, max_length=64)
    torch.manual_seed(0)
    s = Sampler(PromptBart(cfg).eval(), vocab, cfg)
    assert s.head is not None and s.head.windows[1] >= 10 and len(s.head.buckets) >= 2
    yield s
    torch.set_num_threads(before)


def test_streams_are_per_patient_and_stable():
    keys = np.array([row_key(7, i) for i in range(5)], dtype=np.uint64)
    u = uniforms(keys, 3)
    assert ((0 <= u) & (u < 1)).all() and len(set(u.tolist())) == 5
    assert uniforms(keys[2:3], 3)[0] == u[2]  # a row's draw does not depend on its neighbours
    assert row_key(7, 1) != row_key(8, 1)
    # fixed values: the stream must not change between versions (seeds are promises to users)
    assert row_key(0, 0) == 2558736989570252433
    assert (row_key(7, 1), row_key(8, 1)) == (8075172986249684972, 2314000816110686425)
    assert row_key(3, 12345, 1) == 13228468260164075429 and row_key(2**40 + 5, 2**33) == 16585225073432731012
    assert uniforms(keys[:3], 3).tolist() == [0.1240330773558097, 0.6092201301559804, 0.7410565204638326]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=2, max_size=30), st.floats(0.05, 1.0), st.integers(0, 5), st.floats(0, 0.999999))
def test_draw_stays_in_the_nucleus(logits, top_p, top_k, u):
    x = torch.tensor([logits], dtype=torch.float32)
    tok = int(sample_from_logits(x, torch.tensor([u], dtype=torch.float64), 1.0, top_k, top_p)[0])
    p = torch.softmax(x[0].double(), 0)
    if top_k:
        kth = torch.topk(p, min(top_k, len(p))).values[-1]
        if top_p >= 1.0:  # no nucleus cut (a float64 tail can never reach 1 - 1e-6): any token top-k keeps
            assert p[tok] >= kth - 1e-6
            return
        p = torch.where(p >= kth, p, 0.0)
        p = p / p.sum()
    if top_p >= 1.0:
        return
    order = torch.argsort(p, descending=True)
    before = torch.cumsum(p[order], 0) - p[order]
    nucleus = set(order[before < top_p - 1e-6].tolist())  # tolerance: float32 vs float64
    assert tok in nucleus or p[tok] >= p[order[len(nucleus) - 1]] - 1e-6


def test_draw_follows_the_distribution():
    x = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).expand(20000, 3)
    u = torch.from_numpy(uniforms(np.arange(20000, dtype=np.uint64), 0))
    counts = np.bincount(sample_from_logits(x, u, 1.0, 0, 1.0).numpy(), minlength=3) / 20000
    assert np.allclose(counts, [0.5, 0.3, 0.2], atol=0.015)


def test_options_are_checked():
    for bad in ({"temperature": 0}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -1}, {"code_sampler": "x"}):
        with pytest.raises(ValueError):
            SamplingOptions(**bad)


def rows_in_one_go_and_in_slices(sampler, n: int, seed: int, cuts) -> list:
    """Rows generated in one call equal the same rows generated in any slice; returns the whole."""
    ages = [float(15 + 2 * i % 70) for i in range(n)]
    sexes = ["F" if i % 3 else "M" for i in range(n)]
    keys = [row_key(seed, i) for i in range(n)]
    whole = sampler.generate_tokens(ages, sexes, keys, SamplingOptions())
    for lo, hi in cuts:
        assert sampler.generate_tokens(ages[lo:hi], sexes[lo:hi], keys[lo:hi], SamplingOptions()) == whole[lo:hi]
    return ages, sexes, keys, whole


def test_rows_do_not_depend_on_batch(sampler):
    rows_in_one_go_and_in_slices(sampler, MIN_ROWS + 9, 3, ((0, 1), (5, 12), (3, MIN_ROWS + 9)))


def test_reconstruction_keeps_the_prefix(sampler):
    real = [Patient(f"p{i}", 30.0 + i, "MF"[i % 2], [CODES[i:i + 2], CODES[i + 3:i + 6], CODES[i + 7:i + 9]]) for i in range(6)]
    real.append(Patient("man", 40.0, "M", [["650", "4019", "4280", "25000"]]))  # 650 is female-only: dropped from the forcing
    scorer = Scorer(sampler, tokenizer=None)
    halves = [split_half(p)[0] for p in real]
    assert halves[0].visits == [CODES[0:2], CODES[3:4]]  # 7 codes -> first 3: a closed visit and an open one
    done = scorer.reconstruct(halves, seed=1)
    for h, d in zip(halves[:-1], done):
        assert (d.id, d.age, d.sex) == (h.id, h.age, h.sex)
        for k, visit in enumerate(h.visits):
            assert d.visits[k][: len(visit)] == visit
    # 650 is kept from the given prefix (the result starts with the prefix as given) but never generated
    assert done[-1].visits[0][:2] == ["650", "4019"] and [c for v in done[-1].visits for c in v].count("650") == 1
    for h, d in zip(halves, done):  # the evaluation's contract: the flat codes start with the prefix's
        flat = [c for v in d.visits for c in v]
        assert flat[: h.n_codes] == [c for v in h.visits for c in v]
        assert all(len(v) == len(set(v)) for v in d.visits)
    assert done == scorer.reconstruct(halves, seed=1)
    unknown = Patient("u", 50.0, "F", [["99999", "4019"], ["4280"]])
    (u,) = scorer.reconstruct([unknown], seed=2)
    assert u.visits[:1] == [["99999", "4019"]] and u.visits[1][0] == "4280"


def test_perplexity_is_finite(sampler):
    scorer = Scorer(sampler, Tokenizer(sampler.vocab, "hierarchical"))
    pats = [Patient(f"p{i}", 60.0, "F", [CODES[i:i + 4], CODES[i + 2:i + 5]]) for i in range(8)]
    r = scorer.perplexity(pats)
    assert np.isfinite(r["masked"]) and np.isfinite(r["next_visit"]) and r["masked"] > 1
    assert all(isinstance(v, float) for v in r.values())  # the report converts every value with float()


def test_wide_rows_do_not_depend_on_batch(wide_sampler):
    n = MIN_ROWS + 20
    ages, sexes, keys, whole = rows_in_one_go_and_in_slices(wide_sampler, n, 8, ((0, 1), (7, 9), (2, n)))
    assert wide_sampler.generate_many(ages, sexes, keys, SamplingOptions(), batch_size=17) == whole


def test_preallocated_cache_gives_the_dynamic_caches_states(wide_sampler):
    # in-place KV cache (room 4: grows twice) against transformers' concatenating one, with rows dropped
    m = wide_sampler.model
    B = 20
    age, sex = demographics_to_tensors([30.0 + i for i in range(B)], ["MF"[i % 2] for i in range(B)], m.config)
    enc = m.encode(torch.zeros(B, 0, dtype=torch.long), None, age, sex)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, len(wide_sampler.vocab), (B, 12), generator=g)
    with torch.inference_mode():
        out = []
        for cap in (4, None):
            h, past = m.decoder_hidden(ids[:, :2], enc, age, sex, cache_capacity=cap)
            hs, e, a, s, keep = [h], enc, age, sex, torch.arange(B)
            for t in range(2, 12):
                if t in (5, 9):  # drop rows
                    sub = torch.arange(0, keep.numel(), 2 if t == 5 else 3)
                    keep = keep[sub]
                    past, e = m.select(past, e, sub)
                    a, s = a[sub], s[sub]
                h, past = m.decoder_hidden(ids[keep, t:t + 1], e, a, s, past)
                hs.append(h)
            assert past.get_seq_length() == m.n_prompts + 12
            out.append(hs)
    for x, y in zip(*out):
        assert torch.equal(x, y)


def test_window_logits_do_not_depend_on_the_group(wide_sampler):
    # a row's window logits have the same bits in a group of any size (a lone row, 2, 20, 40 rows, one or
    # several width buckets), and they are the full LM head's logits (up to float32 rounding: per-row
    # products need not round like the full matrix product, see model/generation/head.py)
    s = wide_sampler
    L = s.layout
    g = torch.Generator().manual_seed(1)
    h = torch.randn(40, s.config.d_model, generator=g)
    cat = torch.randint(L.category_offset, L.code_offset, (40,), generator=g)
    cat[:20] = int(s.vocab.category_token_of(s.vocab.code_id("25000")))  # the widest category
    idx, _ = window_index(s.head.windows, cat, L.vocab_size)
    real = torch.arange(idx.shape[1])[None, :] < s.head.cat_sizes[cat][:, None]  # the category's own columns
    with torch.inference_mode():
        whole = torch.where(real, s.head.window_logits(h, cat, idx), 0.0)
        full = torch.where(real, s.model.lm_head(h).gather(1, idx), 0.0)
        assert torch.allclose(whole, full, rtol=0, atol=1e-5)
        for rows in (slice(0, 1), slice(0, 2), slice(19, 21), slice(25, 26), slice(20, 40)):
            got = torch.where(real[rows], s.head.window_logits(h[rows], cat[rows], idx[rows]), 0.0)
            assert torch.equal(got, whole[rows])


@pytest.fixture(scope="module")
def closing_sampler(wide_sampler):
    """wide_sampler's model biased towards </v> and </s>: records of very different lengths, so batches
    set stragglers aside."""
    m = copy.deepcopy(wide_sampler.model)
    with torch.no_grad():
        m.final_logits_bias[[wide_sampler.layout.visit_close, wide_sampler.layout.eos]] += 2.5
    return Sampler(m, wide_sampler.vocab, wide_sampler.config)


@pytest.mark.parametrize("batch", [1, 5, 40, 70])
def test_stragglers_set_aside_give_the_same_records(closing_sampler, batch, monkeypatch):
    # generate_many sets stragglers aside with their cache and joins them to a later batch at their
    # position: records equal one batch of everyone, with forced prefixes of different lengths too
    s = closing_sampler
    n = 150
    ages = [float(5 + i % 80) for i in range(n)]
    sexes = ["F" if i % 4 else "M" for i in range(n)]
    keys = [row_key(11, i) for i in range(n)]
    forced = [s.record_prefix([["25000", "4280"], ["4019"]][: i % 3]) for i in range(n)]
    whole = s.generate_tokens(ages, sexes, keys, SamplingOptions(), forced)
    lengths = sorted(len(t) for t in whole)
    assert lengths[n // 2] * 2 < lengths[-1]  # a long tail: stragglers
    joins = []
    join = Group.join
    monkeypatch.setattr(Group, "join", lambda g, other, model: joins.append(other.pos) or join(g, other, model))
    seen = []
    assert s.generate_many(ages, sexes, keys, SamplingOptions(), forced, batch_size=batch, progress=seen.append) == whole
    assert seen[-1] == n and seen == sorted(seen)
    assert joins or batch < 8  # batches of 8 rows or more stop for stragglers
