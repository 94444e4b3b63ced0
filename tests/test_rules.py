"""Sex and age validity rules: boundaries, category tokens, and the vectorised mask against the scalar check."""
from __future__ import annotations

import numpy as np
import pytest

from promptehr.model import rules
from promptehr.model.icd9 import hierarchy


@pytest.mark.parametrize(
    "code, sex, age, allowed",
    [
        ("630", "F", 30, True),
        ("630", "M", 30, False),
        ("632", "M", 30, False),  # a category token is constrained like its codes
        ("6301", "M", 30, False),  # missing from the table, still in category 630
        ("64891", "F", 10, True),
        ("64891", "F", 9.9, False),
        ("64891", "F", 55.9, True),  # whole years: 55
        ("64891", "F", 56, False),
        ("V220", "F", 25, True),
        ("V220", "M", 25, False),
        ("V241", "F", 60, False),
        ("V25", "M", 30, True),  # contraception: either sex
        ("V20", "M", 0, True),  # "V2"-something outside V22-V24
        ("185", "M", 70, True),
        ("185", "F", 70, False),
        ("1830", "M", 50, False),
        ("179", "M", 50, False),
        ("600", "F", 70, False),
        ("6000", "M", 70, True),
        ("614", "M", 40, False),
        ("6299", "F", 40, True),
        ("765", "M", 0, True),
        ("76519", "F", 0.99, True),
        ("765", "M", 1, False),
        ("V30", "F", 0, True),
        ("V3000", "F", 0, True),
        ("V3000", "F", 1, False),
        ("V39", "M", 2, False),
        ("4019", "F", 0, True),
        ("4019", "M", 90, True),
        ("E8889", "F", 30, True),
        ("<s>", "M", 40, True),
    ],
)
def test_rule_boundaries(code, sex, age, allowed):
    assert rules.is_allowed(code, sex, age) is allowed
    assert (rules.violations(code, sex, age) == []) is allowed


def test_unknown_sex_and_age_violate_nothing():
    assert rules.is_allowed("630", "U", float("nan"))
    assert rules.is_allowed("765", "", float("nan"))


def test_violations_name_kind_and_source():
    (sex_rule, age_rule) = rules.violations("650", "M", 70)
    assert (sex_rule.kind, age_rule.kind) == ("sex", "age")
    assert "chapter 11" in sex_rule.source and "Sex conflict" in sex_rule.source
    assert "Maternity" in age_rule.source
    assert all(r.source for r in rules.RULES)


def test_ranges_do_not_leak_across_prefixes():
    # Numeric 022-024 and E-codes never match the V22-V24 rule.
    for code in ("0220", "0239", "E022", "V2", "V02"):
        assert rules.rules_for(code) == ()


def test_allowed_mask_agrees_with_is_allowed_on_random_inputs():
    rng = np.random.default_rng(0)
    table = [c for c in hierarchy().nodes if not c[0].isdigit() or len(c) <= 5]
    pool = ["630", "64891", "V220", "V3000", "765", "185", "6140", "4019", "<s>", "V2", "6301"]
    codes = pool + list(rng.choice(table, 300, replace=False))
    sexes = rng.choice(np.array(["F", "M", "U"]), 200)
    ages = rng.choice(np.array([0, 0.5, 1, 9, 9.99, 10, 30, 55, 55.5, 56, 90, np.nan]), 200)
    mask = rules.allowed_mask(codes, sexes, ages)
    assert mask.shape == (200, len(codes)) and mask.dtype == bool
    expected = np.array([[rules.is_allowed(c, s, a) for c in codes] for s, a in zip(sexes, ages)])
    assert (mask == expected).all()
    assert not mask.all()  # the draw exercises the rules


def test_matrix_separates_sex_and_age():
    m = rules.allowed_matrix(["650", "765", "4019"])
    assert m.sex_mask(np.array(["M"])).tolist() == [[False, True, True]]
    assert m.age_mask(np.array([70.0])).tolist() == [[False, False, True]]
    assert rules.allowed_matrix([]).mask(np.array(["F"]), np.array([1.0])).shape == (1, 0)


def test_real_mimic3_demo_has_no_sex_conflicts(shared_data):
    import pandas as pd

    demo = shared_data / "mimic3-demo"
    diagnoses = pd.read_csv(demo / "DIAGNOSES_ICD.csv", dtype=str)
    sex = pd.read_csv(demo / "PATIENTS.csv", dtype=str).set_index("subject_id")["gender"]
    codes = sorted(set(diagnoses["icd9_code"]))
    patients = diagnoses.groupby("subject_id")["icd9_code"].agg(set)
    mask = rules.allowed_matrix(codes).sex_mask(sex.reindex(patients.index).to_numpy())
    has = np.array([[c in s for c in codes] for s in patients])
    assert not (has & ~mask).any()


# --- ICD-10-CM: the same table, each rule for its own system ---------------------------------------

@pytest.mark.parametrize(
    "code, sex, age, allowed",
    [
        ("icd10:O80", "F", 30, True),
        ("icd10:O80", "M", 30, False),
        ("icd10:O9A11", "F", 9.9, False),  # O9A: the last category of the range
        ("icd10:O9A11", "F", 55.9, True),
        ("icd10:O99", "F", 56, False),
        ("icd10:O", "M", 30, True),  # not a category: no rule
        ("icd10:Z3A20", "M", 30, False),
        ("icd10:Z370", "F", 60, False),
        ("icd10:Z392", "F", 25, True),
        ("icd10:Z3800", "M", 0, True),  # liveborn infant: the newborn's record, either sex ...
        ("icd10:Z3800", "F", 1, False),  # ... under 1 only
        ("icd10:N800", "M", 40, False),
        ("icd10:N98", "F", 40, True),
        ("icd10:N99", "M", 40, True),  # postprocedural genitourinary: either sex
        ("icd10:C56", "M", 60, False),
        ("icd10:C50", "M", 60, True),  # breast: either sex
        ("icd10:C61", "F", 60, False),
        ("icd10:N40", "F", 70, False),
        ("icd10:N400", "M", 70, True),
        ("icd10:N53", "F", 40, False),
        ("icd10:D27", "M", 40, False),
        ("icd10:D29", "F", 40, False),
        ("icd10:P07", "F", 0.5, True),
        ("icd10:P96", "M", 1, False),
        ("icd10:Q00", "M", 1, True),
        ("icd10:I10", "F", 0, True),
    ],
)
def test_icd10_rule_boundaries(code, sex, age, allowed):
    assert rules.is_allowed(code, sex, age) is allowed
    assert (rules.violations(code, sex, age) == []) is allowed


def test_a_rule_applies_to_its_own_system_only():
    # ICD-10 V22-V24, V27-V28, V30-V39 are transport accidents, not the ICD-9 maternity/newborn V codes.
    for code in ("icd10:V220", "icd10:V27", "icd10:V3000"):
        assert rules.rules_for(code) == ()
    # ICD-9 codes never meet an ICD-10 rule: 630-679 are ICD-9 maternity, no ICD-10 rule covers them.
    assert {r.system for r in rules.rules_for("630")} == {"icd9"}
    assert {r.system for r in rules.rules_for("icd10:O80")} == {"icd10"}
    assert rules.rules_for("V30") and not rules.rules_for("icd10:V30")


def test_icd10_rules_name_range_and_source():
    ten = [r for r in rules.RULES if r.system == "icd10"]
    assert {(r.first, r.last) for r in ten} >= {("O00", "O9A"), ("Z33", "Z37"), ("Z39", "Z3A"), ("N70", "N98"), ("C51", "C58"),
                                                 ("N40", "N53"), ("C60", "C63"), ("P00", "P96")}
    assert all("ICD-10-CM Tabular List" in r.source and "Medicare Code Editor" in r.source for r in ten)
    o_sex, o_age = rules.violations("icd10:O80", "M", 70)
    assert (o_sex.kind, o_age.kind) == ("sex", "age") and "O00-O9A" in o_sex.source


def test_mixed_vocabulary_mask_agrees_with_is_allowed():
    codes = ["icd10:O80", "630", "icd10:N400", "185", "icd10:P070", "765", "icd10:Z3800", "icd10:V27", "V27", "<s>", "icd10:O"]
    sexes = np.array(["F", "M", "U", "F", "M", "F"])
    ages = np.array([0, 0.5, 30, 56, 70, np.nan])
    mask = rules.allowed_mask(codes, sexes, ages)
    expected = np.array([[rules.is_allowed(c, s, a) for c in codes] for s, a in zip(sexes, ages)])
    assert (mask == expected).all() and not mask.all()


def test_real_mimic4_demo_icd10_has_no_sex_conflicts(shared_data):
    from promptehr.model.data import load_patients

    for p in load_patients(shared_data / "mimic4-demo", code_system="icd10"):
        assert not [c for v in p.visits for c in v for r in rules.violations(c, p.sex, float("nan")) if r.kind == "sex"]
