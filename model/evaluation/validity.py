"""Validity: codes a clinician would reject regardless of statistics.

Sex and age rules come from model/rules.py, the same table generation masks with, so the report and the
decoder cannot disagree; it covers ICD-9-CM and ICD-10-CM codes alike, each rule its own system's. They
are folded into per-code arrays once, so a 20,000-patient cohort is a few array operations, not one
rule look-up per code slot.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from promptehr.model.codes import category_of, is_known
from promptehr.model.patient import Patient
from promptehr.model.rules import allowed_matrix


def violation_flags(people: sp.csr_matrix, codes: list[str], sexes: np.ndarray, ages: np.ndarray):
    """Per patient: (has a sex-inappropriate code, has an age-inappropriate code).

    `people` is the patient-by-code 0/1 matrix over `codes`. The rules are folded per code once
    (model.rules.allowed_matrix), then checked on the non-zero (patient, code) entries only.
    """
    allowed = allowed_matrix(codes)
    sexes = np.asarray(sexes)
    wrong_sex = np.zeros(people.shape[0], dtype=bool)
    for sex, ok in (("F", allowed.female_ok), ("M", allowed.male_ok)):
        hits = np.asarray(people @ (~ok).astype(np.float32)).ravel() > 0
        wrong_sex |= (sexes == sex) & hits
    entries = sp.coo_matrix(people)
    years = np.floor(np.asarray(ages, dtype=float))[entries.row]
    outside = (years < allowed.min_age[entries.col]) | (years > allowed.max_age[entries.col])
    wrong_age = np.bincount(entries.row[outside], minlength=people.shape[0]) > 0
    return wrong_sex, wrong_age


def duplicate_code_rate(patients: list[Patient]) -> float | None:
    """Share of visits that list some code more than once."""
    lengths = [(len(v), len(set(v))) for p in patients for v in p.visits]
    if not lengths:
        return None
    return float(np.mean([n != d for n, d in lengths]))


def unknown_code_rate(patients: list[Patient], train_vocab: set[str]) -> float | None:
    """Share of code slots in neither their system's table (the ICD-9-CM table, the ICD-10-CM
    release; model.codes.is_known) nor the training vocabulary.

    Real data uses some non-billable parent codes the table may lack, and ICD-10-CM codes of other
    years than the release; a code the model was trained on is a code it may emit, so only codes from
    neither source count as invented.
    """
    codes = [c for p in patients for v in p.visits for c in v]
    if not codes:
        return None
    distinct = set(codes) - train_vocab
    unknown = {c for c in distinct if not is_known(c)}
    return float(np.mean([c in unknown for c in codes])) if unknown else 0.0


def category_mismatch_rate(patients: list[Patient], categories: list[list[list[str]]] | None = None) -> float | None:
    """Share of code slots outside their category.

    With hierarchical output (`categories[i][v][k]` = the category generated for code k of visit v of
    patient i) a code mismatches when its own category differs from the generated one. Without it, a
    code mismatches when its category is not a category of its system's table.
    """
    if categories is not None:
        pairs = [(c, g) for p, pc in zip(patients, categories) for v, vc in zip(p.visits, pc) for c, g in zip(v, vc)]
        if not pairs:
            return None
        return float(np.mean([category_of(c) != g for c, g in pairs]))
    codes = [c for p in patients for v in p.visits for c in v]
    if not codes:
        return None
    bad = {c for c in set(codes) if not is_known(category_of(c))}
    return float(np.mean([c in bad for c in codes])) if bad else 0.0


def validity_measures(patients: list[Patient], people: sp.csr_matrix, codes: list[str],
                      train_vocab: set[str], categories: list[list[list[str]]] | None = None) -> dict[str, float | None]:
    """`people`: the cohort's patient-by-code matrix over `codes` (see counts.patient_matrix)."""
    n = len(patients)
    wrong_sex, wrong_age = violation_flags(people, codes, [p.sex for p in patients], [p.age for p in patients])
    return {
        "sex_violation_rate": float(wrong_sex.mean()) if n else None,
        "age_violation_rate": float(wrong_age.mean()) if n else None,
        "duplicate_code_rate": duplicate_code_rate(patients),
        "unknown_code_rate": unknown_code_rate(patients, train_vocab),
        "category_mismatch_rate": category_mismatch_rate(patients, categories),
    }
