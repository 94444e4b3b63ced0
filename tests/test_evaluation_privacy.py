"""Privacy measures: exact copies, Jaccard nearest neighbours, membership inference, NNAAR."""
import numpy as np
import pytest
import scipy.sparse as sp

from promptehr.model.evaluation import privacy
from promptehr.model.evaluation.counts import build_index, encode, patient_matrix
from promptehr.model.patient import Patient

CODES = ["4019", "25000", "4280", "41401", "486", "5990", "42731", "496", "2724", "V5861", "5849", "2859"]


def cohort(n, seed, prefix):
    """Random patients with 1-3 visits of 1-4 codes: distinct enough that copies stand out."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        visits = [[str(c) for c in rng.choice(CODES, rng.integers(1, 5), replace=False)] for _ in range(rng.integers(1, 4))]
        out.append(Patient(id=f"{prefix}{i}", age=float(rng.integers(20, 90)), sex="FM"[i % 2], visits=visits))
    return out


def test_jaccard_nearest_matches_brute_force():
    rng = np.random.default_rng(1)
    a = sp.csr_matrix((rng.random((30, 12)) < 0.3).astype(np.float32))
    b = sp.csr_matrix((rng.random((50, 12)) < 0.3).astype(np.float32))
    a_to_b, b_to_a = privacy.nearest(a, b, chunk=7)
    A, B = a.toarray().astype(bool), b.toarray().astype(bool)
    inter = (A[:, None, :] & B[None, :, :]).sum(-1)
    union = (A[:, None, :] | B[None, :, :]).sum(-1)
    d = np.where(union > 0, 1 - inter / np.maximum(union, 1), 0.0)
    np.testing.assert_allclose(a_to_b, d.min(1), atol=1e-6)
    np.testing.assert_allclose(b_to_a, d.min(0), atol=1e-6)
    loo, _ = privacy.nearest(a, a, exclude_self=True, chunk=4)
    da = np.where(np.eye(30, dtype=bool), np.inf, 0) + np.where(
        (A[:, None] | A[None]).sum(-1) > 0, 1 - (A[:, None] & A[None]).sum(-1) / np.maximum((A[:, None] | A[None]).sum(-1), 1), 0.0)
    np.testing.assert_allclose(loo, da.min(1), atol=1e-6)


def test_jaccard_of_two_sets():
    m = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1]], dtype=np.float32))
    d, _ = privacy.nearest(m[:1], m[1:])
    assert d[0] == pytest.approx(1 - 1 / 3)


def test_exact_copies_compare_visits_in_order_codes_as_sets():
    train = [Patient("t", 60, "F", [["4019", "25000"], ["486"]])]
    same = Patient("s1", 30, "M", [["25000", "4019"], ["486"]])  # demographics and code order do not matter
    swapped = Patient("s2", 60, "F", [["486"], ["4019", "25000"]])  # visit order does
    assert list(privacy.exact_copies([same, swapped], train)) == [True, False]
    rates = privacy.exact_copy_rates([same, swapped, Patient("s3", 60, "F", [["4019"]])], train)
    assert rates["exact_copy_rate"] == pytest.approx(1 / 3)
    assert rates["exact_copy_rate_multivisit"] == pytest.approx(1 / 2)  # s3 has one visit and one code


def test_copies_of_train_give_high_mia_and_nnaar():
    train, holdout = cohort(300, 0, "t"), cohort(300, 1, "h")
    copies = [Patient(f"s{i}", p.age, p.sex, p.visits) for i, p in enumerate(train)]
    index = build_index(train, holdout, copies)
    p_t, p_h, p_s = (patient_matrix(encode(c, index)) for c in (train, holdout, copies))
    s_to_t, t_to_s = privacy.nearest(p_s, p_t)
    s_to_h, h_to_s = privacy.nearest(p_s, p_h)
    assert np.all(t_to_s == 0)
    assert privacy.mia_auc(t_to_s, h_to_s) > 0.8
    assert privacy.closer_to_train_share(s_to_t, s_to_h) > 0.8
    assert privacy.nnaar(p_t, p_h, p_s) > 0.2


def test_independent_cohort_is_near_chance():
    train, holdout, synth = cohort(400, 0, "t"), cohort(400, 1, "h"), cohort(400, 2, "s")
    index = build_index(train, holdout, synth)
    p_t, p_h, p_s = (patient_matrix(encode(c, index)) for c in (train, holdout, synth))
    s_to_t, t_to_s = privacy.nearest(p_s, p_t)
    s_to_h, h_to_s = privacy.nearest(p_s, p_h)
    assert abs(privacy.mia_auc(t_to_s, h_to_s) - 0.5) < 0.08
    assert abs(privacy.closer_to_train_share(s_to_t, s_to_h) - 0.5) < 0.08
    assert abs(privacy.nnaar(p_t, p_h, p_s)) < 0.08


def test_ties_count_half():
    assert privacy.closer_to_train_share(np.array([0.1, 0.5, 0.2]), np.array([0.2, 0.5, 0.1])) == pytest.approx(0.5)
