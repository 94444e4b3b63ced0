"""Utility (TSTR vs TRTR) on a cohort where the last visit follows from the earlier ones."""
import numpy as np

from model.evaluation import utility
from model.evaluation.counts import build_index, category_matrix, encode
from model.icd9 import category_of
from model.patient import Patient

POOL = ["4019", "25000", "4280", "486", "5990", "41401", "42731", "496"]


def signal(n, seed, prefix, follow=True):
    """Last visit repeats the first code of the first visit (follow) or a random code."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        first = [str(c) for c in rng.choice(POOL, 3, replace=False)]
        last = first[0] if follow else str(rng.choice(POOL))
        out.append(Patient(f"{prefix}{i}", float(rng.integers(30, 90)), "FM"[i % 2], [first, [last]]))
    return out


def scores(train, holdout, synth):
    index = build_index(train, holdout, synth)
    cats, _ = category_matrix(list(index), category_of)
    return utility.utility_measures(*(encode(c, index) for c in (train, holdout, synth)), cats)


def test_tstr_matches_trtr_when_synthetic_keeps_the_signal():
    train, holdout = signal(600, 0, "t"), signal(300, 1, "h")
    s = scores(train, holdout, signal(600, 2, "s"))
    assert s["trtr_auroc"] > 0.75
    assert abs(s["tstr_auroc"] - s["trtr_auroc"]) < 0.05


def test_tstr_is_chance_when_synthetic_loses_the_signal():
    # a classifier fit on noise scores the binary history features with random signs: chance +- ~0.1
    s = scores(signal(600, 0, "t"), signal(300, 1, "h"), signal(2000, 2, "s", follow=False))
    assert s["tstr_auroc"] < s["trtr_auroc"] - 0.2


def test_single_visit_patients_are_left_out():
    cohort = signal(5, 0, "t") + [Patient("one", 50, "F", [["4019"]])]
    index = build_index(cohort)
    cats, _ = category_matrix(list(index), category_of)
    x, y = utility.task(encode(cohort, index), cats)
    assert x.shape[0] == y.shape[0] == 5
    assert x.shape[1] == cats.shape[1] + 2  # history categories + age + sex
