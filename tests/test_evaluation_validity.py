"""Validity on crafted patients: sex and age rules (model/rules.py), duplicates, unknown codes, categories."""
import pytest

from promptehr.model.evaluation import validity
from promptehr.model.evaluation.counts import build_index, encode, patient_matrix
from promptehr.model.patient import Patient


def measures(patients, vocab=()):
    index = build_index(patients)
    return validity.validity_measures(patients, patient_matrix(encode(patients, index)), list(index), set(vocab))


def test_a_male_with_632_is_a_sex_violation():
    m = measures([Patient("1", 30, "M", [["4019"], ["632"]]), Patient("2", 30, "F", [["632"]]),
                  Patient("3", 60, "M", [["4019"]]), Patient("4", 60, "F", [["185"]])])
    assert m["sex_violation_rate"] == pytest.approx(2 / 4)  # the man with 632, the woman with 185
    assert m["age_violation_rate"] == 0.0


def test_pregnancy_at_70_is_an_age_violation():
    m = measures([Patient("1", 70, "F", [["632"]]), Patient("2", 70, "F", [["4019"]])])
    assert m["age_violation_rate"] == pytest.approx(0.5)
    assert m["sex_violation_rate"] == 0.0


def test_duplicates_are_counted_per_visit():
    m = measures([Patient("1", 50, "F", [["4019", "4019"], ["486"]]), Patient("2", 50, "F", [["486"]])])
    assert m["duplicate_code_rate"] == pytest.approx(1 / 3)


def test_unknown_codes_are_in_neither_the_table_nor_training():
    patients = [Patient("1", 50, "F", [["4019", "XYZ12"], ["ABC99", "4280"]])]
    assert measures(patients)["unknown_code_rate"] == pytest.approx(2 / 4)
    # a code the model was trained on is not invented, even when the table lacks it
    assert measures(patients, vocab={"XYZ12"})["unknown_code_rate"] == pytest.approx(1 / 4)


def test_codes_outside_their_category():
    patients = [Patient("1", 50, "F", [["4019", "XYZ12"]])]
    assert validity.category_mismatch_rate(patients) == pytest.approx(0.5)  # "XYZ" is no ICD-9 category
    # hierarchical output: the code must lie inside the category generated for it
    assert validity.category_mismatch_rate([Patient("1", 50, "F", [["4019", "25000"]])], [[["401", "401"]]]) == pytest.approx(0.5)


def test_icd10_rules_count_in_the_report():
    """The same table as generation: a man of 60 with an ICD-10 delivery code (wrong sex and age), a woman
    with prostate disease, an adult with a perinatal code; the ICD-9 E8809 (a fall) breaks nothing."""
    m = measures([Patient("1", 60, "M", [["icd10:O80"]]), Patient("2", 70, "F", [["icd10:N400", "E8809"]]),
                  Patient("3", 40, "F", [["icd10:P070"]]), Patient("4", 0, "M", [["icd10:P070", "icd10:Z3800"]]),
                  Patient("5", 30, "F", [["icd10:O80", "icd10:E8809"]])])
    assert m["sex_violation_rate"] == pytest.approx(2 / 5)
    assert m["age_violation_rate"] == pytest.approx(2 / 5)  # the man of 60 with O80, the woman of 40 with P070


def test_icd10_codes_missing_from_the_release_are_unknown_unless_trained_on():
    ps = [Patient("1", 50, "F", [["icd10:I10", "icd10:S0262XA"], ["icd10:Q9Z99", "4019"]])]
    assert measures(ps)["unknown_code_rate"] == pytest.approx(2 / 4)
    assert measures(ps, vocab={"icd10:S0262XA"})["unknown_code_rate"] == pytest.approx(1 / 4)
    # Without generated categories, a code whose category is not in its system's table mismatches.
    assert measures(ps)["category_mismatch_rate"] == pytest.approx(1 / 4)
    assert validity.category_mismatch_rate(ps, [[["icd10:I10", "icd10:S02"], ["icd10:Q9Z", "401"]]]) == 0.0
    assert validity.category_mismatch_rate(ps, [[["I10", "icd10:S02"], ["icd10:Q9Z", "401"]]]) == pytest.approx(1 / 4)
