"""Fidelity measures on hand-made cohorts with known answers."""
import numpy as np
import pytest

from promptehr.model.evaluation import fidelity
from promptehr.model.evaluation.counts import (
    build_index,
    category_matrix,
    encode,
    pair_counts,
    patient_matrix,
    subset,
    transition_counts,
)
from promptehr.model.icd9 import category_of
from promptehr.model.patient import Patient


def P(pid, *visits, age=60.0, sex="F"):
    return Patient(id=str(pid), age=age, sex=sex, visits=[list(v) for v in visits])


COHORT = [
    P(1, ["4019", "25000"], ["4019", "4280"]),
    P(2, ["4019", "25000", "41401"]),
    P(3, ["486"], ["4280"], ["4019", "486"]),
    P(4, ["25000", "4019"]),
]


def stats_of(*cohorts):
    index = build_index(*cohorts)
    cats, _ = category_matrix(list(index), category_of)
    return index, [fidelity.stats(encode(c, index), cats) for c in cohorts]


def test_pair_and_transition_counts_are_exact():
    index = build_index(COHORT)
    enc = encode(COHORT, index)
    keys, counts = pair_counts(enc)
    n = len(index)
    got = {(list(index)[k // n], list(index)[k % n]): c for k, c in zip(keys, counts)}
    # {4019, 25000} is in 3 visits (patients 1, 2, 4), stored once as an unordered pair
    assert got[("4019", "25000")] == 3
    assert got[("4019", "4280")] == 1 and got[("4019", "486")] == 1
    assert sum(counts) == 1 + 1 + 3 + 0 + 0 + 1 + 1  # pairs per visit, in visit order
    keys, counts = transition_counts(enc)
    got = {(list(index)[k // n], list(index)[k % n]): c for k, c in zip(keys, counts)}
    # consecutive visits: p1 v1->v2, p3 v1->v2, p3 v2->v3; never across patients
    assert got == {("4019", "4019"): 1, ("4019", "4280"): 1, ("25000", "4019"): 1, ("25000", "4280"): 1,
                   ("486", "4280"): 1, ("4280", "4019"): 1, ("4280", "486"): 1}


def test_identical_cohorts_give_r2_one_and_js_zero():
    _, (a, b) = stats_of(COHORT, [P(f"c{p.id}", *p.visits) for p in COHORT])
    m = fidelity.prevalence_measures(a, b)
    for name in ("unigram_r2", "cooccurrence_r2", "transition_r2", "category_r2", "top100_overlap"):
        assert m[name] == pytest.approx(1.0), name
    assert m["js_divergence"] == pytest.approx(0.0, abs=1e-12)


def test_disjoint_vocabularies_give_overlap_zero_and_js_one():
    other = [P(9, ["V5861", "E8889"], ["V5861"]), P(10, ["0389", "5990"])]
    _, (a, b) = stats_of(COHORT, other)
    m = fidelity.prevalence_measures(a, b)
    assert m["top100_overlap"] == 0.0
    assert m["cooccurrence_supported_share"] == 0.0
    assert m["js_divergence"] == pytest.approx(1.0)  # base 2: disjoint supports are at the maximum
    assert m["unigram_r2"] < 0


def test_r2_uses_union_of_keys_only():
    a = np.array([0.5, 0.25, 0.0, 0.0])
    b = np.array([0.5, 0.0, 0.25, 0.0])
    # keys 0..2 only; the all-zero key 3 would inflate R^2
    from sklearn.metrics import r2_score
    assert fidelity.r2_union(a, b) == pytest.approx(r2_score(a[:3], b[:3]))


def test_supported_share_counts_pairs_seen_five_times():
    train = [P(i, ["4019", "25000"]) for i in range(5)] + [P(99, ["486", "4280"])]
    other = [P("a", ["4019", "25000"]), P("b", ["486", "4280"])]
    _, (a, b) = stats_of(train, other)
    assert fidelity.cooccurrence_supported_share(a, b) == pytest.approx(0.5)


def test_length_measures_and_ks():
    enc = encode(COHORT, build_index(COHORT))
    m = fidelity.length_measures(enc, enc)
    assert m["visits_per_patient_mean"] == pytest.approx(7 / 4)
    assert m["codes_per_visit_mean"] == pytest.approx(13 / 7)
    assert m["visits_per_patient_ks"] == 0.0


def test_subset_keeps_each_patients_visits_in_order():
    index = build_index(COHORT)
    enc = encode(COHORT, index)
    sub = subset(enc, np.array([2, 0]))
    assert list(sub.visits_per_patient) == [3, 2]
    codes = list(index)
    rows = [[codes[j] for j in sub.visits[i].indices] for i in range(sub.n_visits)]
    assert [sorted(r) for r in rows] == [["486"], ["4280"], sorted(["4019", "486"]), sorted(["4019", "25000"]), sorted(["4019", "4280"])]
    assert patient_matrix(sub).sum() == 3 + 3
