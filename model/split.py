"""Deterministic 80/10/10 train / validation / holdout split by a stable hash of (seed, patient id).

A patient's split depends only on its id and the seed, never on loading order, process or machine:
the hash is BLAKE2b (Python's hash() is salted per process), read as a number in [0, 1).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TypeVar

SPLITS = ("train", "validation", "holdout")
TRAIN_END = 0.8  # [0, 0.8) train
VALIDATION_END = 0.9  # [0.8, 0.9) validation, [0.9, 1) holdout

P = TypeVar("P")


def unit_hash(patient_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, patient id)."""
    digest = hashlib.blake2b(f"{seed}:{patient_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_of(patient_id: str, seed: int) -> str:
    u = unit_hash(str(patient_id), seed)
    if u < TRAIN_END:
        return "train"
    return "validation" if u < VALIDATION_END else "holdout"


def splits_of(patient_ids: Iterable[str], seed: int) -> list[str]:
    return [split_of(pid, seed) for pid in patient_ids]


def _id_of(patient) -> str:
    # Patients carry .id; plain ids are accepted too.
    return patient if isinstance(patient, str) else patient.id


def split_patients(patients: Sequence[P], seed: int) -> tuple[list[P], list[P], list[P]]:
    """(train, validation, holdout), each in the input order."""
    parts: dict[str, list[P]] = {name: [] for name in SPLITS}
    for patient in patients:
        parts[split_of(_id_of(patient), seed)].append(patient)
    return parts["train"], parts["validation"], parts["holdout"]
