"""The batched sampler gives the records of the plain one-patient reference (model/generation/reference.py),
token for token, and every draw reads the same masked logits to the bit: tiny models trained for this
module on the MIMIC-III demo (hierarchical and flat), with batches that pad, drop rows and set
stragglers aside, with required codes and with prefixes of each patient's own."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from promptehr.cli.main import main
from promptehr.model.generation import draw as draw_module
from promptehr.model.generation import reference
from promptehr.model.generation.cohort import CohortSpec, demographics, generate_cohort
from promptehr.model.generation.draw import SamplingOptions
from promptehr.model.generation.options import DEFAULT_FREQUENCY_MIX
from promptehr.model.generation.sampler import Sampler
from promptehr.model.generation.streams import row_key, uniforms
from promptehr.model.nn.checkpoint import load_checkpoint

N = 48
SAMPLE_FROM_LOGITS = draw_module.sample_from_logits
BATCH = 17  # several batches, each padded to MIN_ROWS; rows drop, stragglers join the next batch
# slow: the module fixtures train two models (hierarchical, flat) and each test generates a cohort twice
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # one_thread: tests/conftest.py


def trained(tmp_path_factory, shared_data, mode: str, *extra: str) -> Sampler:
    out = tmp_path_factory.mktemp(mode) / "model"
    rc = main(["train", "--data", str(shared_data / "mimic3-demo"), "--preset", "tiny", "--mode", mode, "--epochs", "2",
               "--seed", "0", "--out", str(out), "--device", "cpu", *extra])
    assert rc == 0
    return Sampler.from_bundle(load_checkpoint(out, "cpu"))


@pytest.fixture(scope="module")
def hier(tmp_path_factory, shared_data, one_thread) -> Sampler:
    s = trained(tmp_path_factory, shared_data, "hierarchical")
    assert s.head is not None and len(s.head.buckets) >= 2  # code windows of more than one width
    assert s.layout.gaps and s.layout.stays  # MIMIC-III has admission and discharge times: the model learned them
    return s


@pytest.fixture(scope="module")
def flat(tmp_path_factory, shared_data, one_thread) -> Sampler:
    s = trained(tmp_path_factory, shared_data, "flat")
    assert s.head is None and s.layout.gaps and s.layout.stays
    return s


@pytest.fixture(scope="module")
def hier_no_time(tmp_path_factory, shared_data, one_thread) -> Sampler:
    s = trained(tmp_path_factory, shared_data, "hierarchical", "--no-time")
    assert not (s.layout.gaps or s.layout.stays)
    return s


def patients(n: int = N, seed: int = 4):
    ages = [float(5 + 7 * i % 85) for i in range(n)]
    sexes = ["F" if i % 3 else "M" for i in range(n)]
    return ages, sexes, [row_key(seed, i) for i in range(n)]


def record_draws(monkeypatch) -> dict[float, list[torch.Tensor]]:
    """From now on, the masked logits of every draw, by the uniform it draws with (a hash of row key and position)."""
    book: dict[float, list[torch.Tensor]] = {}

    def recording(masked, u, *args):
        for row, x in zip(masked, u.tolist()):
            book.setdefault(x, []).append(row.clone())
        return SAMPLE_FROM_LOGITS(masked, u, *args)

    monkeypatch.setattr(draw_module, "sample_from_logits", recording)
    return book


def assert_same_draws(fast_book, ref_book) -> None:
    """Every draw of the reference was drawn by the batched sampler from bit-identical masked logits (it
    draws more: at forced positions, and for padding rows)."""
    assert ref_book
    for u, (row,) in ref_book.items():
        assert u in fast_book
        assert all(torch.equal(r, row) for r in fast_book[u])


def fast_and_reference(s: Sampler, monkeypatch, ages, sexes, keys, opts, forced=None, limits=None, batch_size=BATCH,
                       shared=None):
    fast_book = record_draws(monkeypatch)
    fast = s.generate_many(ages, sexes, keys, opts, forced, limits, batch_size=batch_size)
    ref_book = record_draws(monkeypatch)
    forced = forced or [[] for _ in ages]
    ref = [reference.generate(s, a, x, k, opts, f, limits, shared) for a, x, k, f in zip(ages, sexes, keys, forced)]
    assert fast == ref
    assert_same_draws(fast_book, ref_book)
    assert sum(len(t) for t in fast) > 8 * len(ages)  # real records, not empty ones
    return fast


@pytest.mark.parametrize("opts", [SamplingOptions(), SamplingOptions(temperature=1.7, top_p=1.0, top_k=5),
                                  SamplingOptions(temperature=0.6, top_p=0.8), SamplingOptions(code_sampler="frequency"),
                                  SamplingOptions(stop_bias=-2.0), SamplingOptions(frequency_mix=0.3, temperature=1.3, top_p=0.9),
                                  SamplingOptions(precision="fp32")],
                         ids=["default", "hot-top-k", "cold-top-p", "frequency", "stop-bias", "frequency-mix", "fp32"])
def test_hierarchical_records_are_the_references(hier, monkeypatch, opts):
    fast = fast_and_reference(hier, monkeypatch, *patients(), opts)
    if opts.stop_bias:  # more visits: later ones, each with its gap
        assert any(hier.vocab.is_gap(t) for r in fast for t in r)


def test_records_of_a_model_without_time_are_the_references(hier_no_time, monkeypatch):
    fast_and_reference(hier_no_time, monkeypatch, *patients(), SamplingOptions())


def test_required_codes_give_the_references_cohort(hier, monkeypatch):
    # a cohort forces the same tokens on every row: the reference feeds them all with <s>, as every batch does
    spec = CohortSpec.from_dict({"required_codes": ["4019", "4280"]})
    seed = 9
    fast_book = record_draws(monkeypatch)
    cohort = generate_cohort(None, spec, N, seed, batch_size=BATCH, sampler=hier)
    ref_book = record_draws(monkeypatch)
    forced = hier.required_prefix(spec.required_codes)
    limits = hier.limits(spec.max_visits, spec.max_codes_per_visit, n_forced=len(spec.required_codes))
    for i, p in enumerate(cohort):
        age, sex = demographics(spec, seed, i)
        tokens = reference.generate(hier, age, sex, row_key(seed, i), spec.sampling, forced, limits)
        assert (p.age, p.sex, p.visits) == (age, sex, hier.visits_of(tokens))
        assert p.visits[0][:2] == ["4019", "4280"]
    assert_same_draws(fast_book, ref_book)


@pytest.mark.parametrize("kind", ["shared-first-visit", "some-without"])
def test_prefixes_of_their_own_give_the_references_records(hier, monkeypatch, kind):
    # reconstruction: each row forces its own partial record. One batch: it feeds the prefix all its
    # rows share with <s> (`shared`), the rest one token per step; the reference is told how many
    ages, sexes, keys = patients()
    first = ["4019", "5849"] if kind == "shared-first-visit" else []
    visits = [[first + [["42731", "4280", "25000"][i % 3]], [["51881", "2724"][i % 2]]][: 1 + i % 2] for i in range(N)]
    if kind == "some-without":
        visits = [v if i % 4 else [] for i, v in enumerate(visits)]
    # the model learned time: a closed visit is forced with its stay, a later one with its gap
    forced = [hier.record_prefix(v, [20 * k for k in range(len(v))], [i % 5] * len(v)) for i, v in enumerate(visits)]
    shared = len(os.path.commonprefix(forced))
    assert shared == (5 if kind == "shared-first-visit" else 0)  # <v> K 4019 K 5849 | nothing
    limits = hier.limits(max_codes_per_visit=8)
    fast = fast_and_reference(hier, monkeypatch, ages, sexes, keys, SamplingOptions(), forced, limits, batch_size=N,
                              shared=shared)
    assert all(t[: len(f)] == f for t, f in zip(fast, forced))


def test_the_frequency_mix_draws_from_the_mixture_of_model_and_frequencies(hier):
    """Stage 2 with frequency_mix m: (1 - m) * the model's probabilities + m * the training frequencies' over the
    category's allowed codes; uniforms spread evenly over (0, 1) land on each code as often as its share."""
    L, n = hier.layout, 4000
    cat = int(torch.argmax(hier.head.cat_sizes))  # the widest category
    idx, inside = draw_module.window_index(hier.head.windows, torch.full((n,), cat), L.vocab_size)
    ok = inside.clone()
    ok[:, 0] = False  # a code the rules forbid gets nothing from either part
    logits = torch.linspace(2.0, -2.0, idx.shape[1]).expand(n, -1).contiguous()
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    width = int(inside[0].sum())

    def shares(opts) -> torch.Tensor:
        col = idx[0].tolist()
        tok = draw_module.draw_codes(logits, ok, idx, L, u, opts, hier.freq_logits)
        return torch.bincount(torch.tensor([col.index(t) for t in tok.tolist()]), minlength=idx.shape[1])[:width].double() / n

    def probs(x: torch.Tensor) -> torch.Tensor:
        x = x[:width].clone()
        x[0] = -torch.inf
        return torch.softmax(x.double(), 0)

    model, freq = probs(logits[0] / 1.2), probs(hier.freq_logits[idx[0]])
    for m in (0.0, 0.25, 1.0):
        got = shares(SamplingOptions(temperature=1.2, frequency_mix=m))
        assert got[0] == 0 and torch.allclose(got, (1 - m) * model + m * freq, atol=2 / n), m
    assert not torch.allclose(model, freq, atol=0.05)  # the two parts differ: the mix is seen
    assert torch.equal(shares(SamplingOptions(frequency_mix=1.0)), shares(SamplingOptions(code_sampler="frequency")))


def test_a_cohort_without_frequency_mix_takes_the_models_default(hier, flat):
    """Absent: DEFAULT_FREQUENCY_MIX for a hierarchical model (its records are those of the explicit value, not
    of 0), 0 for a flat one (which generates)."""
    def cohort(sampler, **sampling):
        return [p.visits for p in generate_cohort(None, {"sampling": sampling}, 40, seed=3, sampler=sampler)]

    assert cohort(hier) == cohort(hier, frequency_mix=DEFAULT_FREQUENCY_MIX) != cohort(hier, frequency_mix=0.0)
    assert cohort(flat) == cohort(flat, frequency_mix=0.0)


def test_a_flat_model_refuses_the_frequency_samplers(flat):
    for sampling in ({"frequency_mix": 0.2}, {"code_sampler": "frequency"}):
        with pytest.raises(ValueError, match="need a hierarchical model"):
            generate_cohort(None, {"sampling": sampling}, 4, seed=0, sampler=flat)


def test_flat_records_are_the_references(flat, monkeypatch):
    fast_and_reference(flat, monkeypatch, *patients(40, seed=2), SamplingOptions(top_k=20))
    fast_and_reference(flat, monkeypatch, *patients(40, seed=2), SamplingOptions(top_k=20, precision="fp32"))
    forced = [flat.required_prefix(["4019"])] * 40
    fast_and_reference(flat, monkeypatch, *patients(40, seed=3), SamplingOptions(), forced)


def test_stop_bias_moves_the_visit_count_and_nothing_when_zero(hier):
    """stop_bias shifts the end-of-record logit only: below 0 more visits per patient, above 0 fewer, and 0.0
    gives the very records of the options without it (same bytes as before the option existed)."""
    ages, sexes, keys = patients(96, seed=5)

    def visits_per_patient(bias: float) -> float:
        records = hier.generate_many(ages, sexes, keys, SamplingOptions(stop_bias=bias), batch_size=BATCH)
        return sum(len(hier.visits_of(t)) for t in records) / len(records)

    fewer, same, more = visits_per_patient(3.0), visits_per_patient(0.0), visits_per_patient(-3.0)
    assert fewer < same < more, (fewer, same, more)
    assert hier.generate_many(ages, sexes, keys, SamplingOptions(stop_bias=0.0), batch_size=BATCH) == \
        hier.generate_many(ages, sexes, keys, SamplingOptions(), batch_size=BATCH)


def test_bf16_runs_the_decoder_in_bfloat16_and_draws_from_float32_logits(hier, monkeypatch):
    """The default precision changes the decoder's arithmetic, not the draws': the first draw of each
    patient (the same uniform in both runs) reads float32 logits close to fp32's but not their bits."""
    ages, sexes, keys = patients()
    books = {}
    for p in ("bf16", "fp32"):
        books[p] = record_draws(monkeypatch)
        hier.generate_many(ages, sexes, keys, SamplingOptions(precision=p), batch_size=BATCH)
    assert SamplingOptions().precision == "bf16"
    assert all(r.dtype == torch.float32 for rows in books["bf16"].values() for r in rows)
    first = uniforms(np.asarray(keys, dtype=np.uint64), 1)  # position 1: the first draw after <s>
    gaps = []
    for u in first.tolist():
        (a, *_), (b, *_) = books["bf16"][u], books["fp32"][u]
        live = torch.isfinite(b)
        assert torch.equal(live, torch.isfinite(a))  # the same mask
        gaps.append(float((a[live] - b[live]).abs().max()))
    assert max(gaps) > 0  # bfloat16 arithmetic: other bits
    assert max(gaps) < 0.25, gaps  # but the same logits to bfloat16's precision (3 significant digits)
