"""model/codes.py: one string per code, its system in the string; ICD-9 bare as before, ICD-10 "icd10:"."""
from __future__ import annotations

import pytest

from promptehr.model import codes


def test_qualify_and_split_round_trip_and_keep_icd9_bare():
    assert codes.qualify("4019", "icd9") == "4019"
    assert codes.qualify("E8809", "icd10") == "icd10:E8809"
    for code, system, bare in (("4019", "icd9", "4019"), ("icd10:E8809", "icd10", "E8809"), ("E8809", "icd9", "E8809"),
                               ("icd9:V5861", "icd9", "V5861"), ("<s>", "icd9", "<s>")):
        assert codes.split(code) == (system, bare)
        assert codes.system_of(code) == system and codes.bare(code) == bare
    assert codes.qualify(*reversed(codes.split("icd10:I10"))) == "icd10:I10"


def test_the_two_systems_never_give_the_same_string():
    assert codes.qualify("E8809", "icd9") != codes.qualify("E8809", "icd10")
    assert codes.category_of("E8809") == "E880"  # ICD-9 E code: 4 characters
    assert codes.category_of("icd10:E8809") == "icd10:E88"  # ICD-10: 3 characters, qualified
    assert codes.category_of("4019") == "401" and codes.category_of("V5861") == "V58"
    assert codes.category_of("icd10:S72001A") == "icd10:S72"


@pytest.mark.parametrize("typed, system, stored", [
    ("401.9", None, "4019"), (" v58.61 ", None, "V5861"), ("E11.9", None, "E119"),  # bare: ICD-9
    ("E11.9", "icd10", "icd10:E119"), ("icd10:e11.9", None, "icd10:E119"), ("ICD10:I10", "10", "icd10:I10"),
    ("icd9:401.9", None, "4019"), ("icd9:4019", "icd9", "4019"), ("250.00", "9", "25000"),
])
def test_normalize_what_users_type(typed, system, stored):
    assert codes.normalize(typed, system) == stored


def test_normalize_refuses_a_prefix_that_contradicts_the_system_and_unknown_systems():
    with pytest.raises(ValueError, match="names icd10 but icd9"):
        codes.normalize("icd10:I10", "icd9")
    with pytest.raises(ValueError, match="unknown code system 'icd11'"):
        codes.normalize("icd11:X")


@pytest.mark.parametrize("name, system", [("icd9", "icd9"), ("ICD10", "icd10"), ("9", "icd9"), (10, "icd10"),
                                          ("10.0", "icd10"), (" ICD-10-CM ", "icd10"), ("icd-9-cm", "icd9")])
def test_parse_system_spellings(name, system):
    assert codes.parse_system(name) == system


@pytest.mark.parametrize("name", ["icd11", "", "ICD", "snomed", "9.5", None])
def test_parse_system_refuses_others(name):
    with pytest.raises(ValueError, match="expected icd9 or icd10"):
        codes.parse_system(name)


def test_known_valid_and_titles_by_system():
    assert codes.is_known("4019") and codes.is_known("icd10:I10") and codes.is_known("icd10:E88")
    assert not codes.is_known("icd10:4019") and not codes.is_known("I10")  # bare I10 is read as ICD-9
    assert codes.is_valid("icd10:S0262XA") and not codes.is_known("icd10:S0262XA")  # an older year's code
    assert not codes.is_valid("icd10:4019") and not codes.is_valid("X123")
    assert codes.describe("E8809", short=True) == "Fall on stair/step NEC"
    assert codes.describe("icd10:E8809").startswith("Other disorders of plasma-protein metabolism")
    assert codes.describe("icd10:I10") == "Essential (primary) hypertension"
    unknown = codes.describe("icd10:S0262XA")
    assert unknown.startswith("unknown title") and "category S02: Fracture of skull and facial bones" in unknown
    assert codes.label("icd10:I10") == "I10 (ICD-10-CM)" and codes.label("4019") == "4019 (ICD-9-CM)"


def test_systems_in_keeps_the_fixed_order():
    assert codes.systems_in(["icd10:I10", "4019"]) == ("icd9", "icd10")
    assert codes.systems_in(["icd10:I10"]) == ("icd10",) and codes.systems_in([]) == ()
