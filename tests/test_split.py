"""Deterministic train / validation / holdout split."""
from __future__ import annotations

import random
from collections import Counter

from promptehr.model.patient import Patient
from promptehr.model.split import split_of, split_patients, splits_of

IDS = [f"patient-{i}" for i in range(10_000)]


def test_proportions_within_tolerance():
    counts = Counter(splits_of(IDS, seed=0))
    # Binomial sd at n=10,000: 0.4% for 80%, 0.3% for 10%; allow about 4 sd.
    assert abs(counts["train"] / 10_000 - 0.8) < 0.016
    assert abs(counts["validation"] / 10_000 - 0.1) < 0.012
    assert abs(counts["holdout"] / 10_000 - 0.1) < 0.012


def test_independent_of_order_and_preserves_it():
    patients = [Patient(id=i, age=50.0, sex="F", visits=[["4019"]]) for i in IDS[:2000]]
    shuffled = patients[:]
    random.Random(1).shuffle(shuffled)
    parts = split_patients(patients, seed=3)
    parts_shuffled = split_patients(shuffled, seed=3)
    for part, part_shuffled in zip(parts, parts_shuffled):
        assert {p.id for p in part} == {p.id for p in part_shuffled}
        assert [p.id for p in part] == [p.id for p in patients if p in part]  # input order kept
    assert sum(len(p) for p in parts) == 2000


def test_plain_ids_accepted():
    train, validation, holdout = split_patients(IDS[:100], seed=0)
    assert sorted(train + validation + holdout) == sorted(IDS[:100])


def test_different_seeds_give_different_splits():
    a, b = splits_of(IDS[:1000], seed=0), splits_of(IDS[:1000], seed=1)
    changed = sum(x != y for x, y in zip(a, b))
    assert changed > 200  # two independent 80/10/10 draws differ for about 34% of ids


def test_pinned_assignments():
    # Pins the hash (BLAKE2b-64 of "seed:id"): if these change, every saved split silently changes.
    assert split_of("10006", 0) == "holdout"
    assert split_of("10011", 0) == "train"
    assert split_of("p6", 0) == "holdout"
    assert split_of("p4", 7) == "validation"
    assert split_of("p6", 7) == "train"
