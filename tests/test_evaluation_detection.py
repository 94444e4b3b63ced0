"""Detection AUROC (real vs synthetic classifier) and fidelity by sample size."""
import numpy as np

from promptehr.model.evaluation import by_size, detection, fidelity
from promptehr.model.evaluation.counts import build_index, category_matrix, encode
from promptehr.model.icd9 import category_of
from promptehr.model.patient import Patient

CODES = ["4019", "25000", "4280", "41401", "486", "5990", "42731", "496", "2724", "V5861", "5849", "2859", "2449", "53081"]


def cohort(n, seed, prefix, codes=CODES):
    rng = np.random.default_rng(seed)
    return [Patient(f"{prefix}{i}", float(rng.integers(20, 90)), "FM"[i % 2],
                    [[str(c) for c in rng.choice(codes, rng.integers(2, 6), replace=False)] for _ in range(rng.integers(1, 4))])
            for i in range(n)]


def encoded(*cohorts):
    index = build_index(*cohorts)
    cats, _ = category_matrix(list(index), category_of)
    return [encode(c, index) for c in cohorts], cats


def test_two_samples_of_one_distribution_are_not_detected():
    (a, b), cats = encoded(cohort(400, 0, "a"), cohort(400, 1, "b"))
    assert abs(detection.detection_auroc(a, b, cats) - 0.5) < 0.08


def test_a_cohort_with_other_codes_is_detected():
    # the synthetic side draws from half the codes only: every record with an absent code is real
    (a, b), cats = encoded(cohort(400, 0, "a"), cohort(400, 1, "b", CODES[:7]))
    assert detection.detection_auroc(a, b, cats) > 0.9


def test_detection_uses_equal_sizes():
    (a, b), cats = encoded(cohort(100, 0, "a"), cohort(1000, 1, "b"))
    assert detection.record_features(a, cats).shape[0] == 100
    assert abs(detection.detection_auroc(a, b, cats) - 0.5) < 0.15  # 100 vs 100, not 100 vs 1000


def test_fidelity_by_size_curves():
    (tr, ho, sy), cats = encoded(cohort(1500, 0, "t"), cohort(600, 1, "h"), cohort(2000, 2, "s"))
    out = by_size.fidelity_by_size(fidelity.stats(tr, cats), ho, sy, cats, np.random.default_rng(0), repeats=2)
    assert out["n"] == [250, 500, 600]
    for cohort_name in ("synthetic", "holdout"):
        r2 = out[cohort_name]["unigram_r2"]
        assert len(r2) == 3 and r2[0] < r2[-1] <= 1.0  # R^2 grows with the sample
    assert by_size.sizes_for(100, 5000) == [100] and by_size.sizes_for(3000, 800) == [250, 500, 800]
