"""model/icd10.py over simple-icd-10-cm: the release's codes, categories, chapters, blocks, titles."""
from __future__ import annotations

import re

import pytest

from promptehr.model import icd10


def test_the_fast_code_list_is_the_packages_tree():
    """release_codes reads the package's code list without importing it; the tree must agree."""
    cm = icd10._tree()

    tree = {c for c in cm.get_all_codes(with_dots=False) if re.fullmatch(icd10.CODE_PATTERN, c)}
    assert icd10.release_codes() == tree
    assert len(tree) > 98_000 and icd10.release() == "April 2026"
    assert not any(c.isdigit() or "-" in c for c in icd10.release_codes())  # chapters and blocks are not codes


@pytest.mark.parametrize("code, known", [("I10", True), ("E119", True), ("E88", True), ("S72001A", True), ("O9A11", True),
                                         ("U071", True), ("S0262XA", False), ("E11.9", False), ("4019", False), ("4", False)])
def test_known_codes(code, known):
    assert icd10.is_known(code) is known


@pytest.mark.parametrize("code, valid", [("I10", True), ("S0262XA", True), ("Z9999", True), ("E8809", True), ("V5861", True),
                                         ("4019", False), ("I1", False), ("I10ABCDE", False), ("i10", False), ("E11.9", False)])
def test_shape(code, valid):
    assert icd10.is_valid(code) is valid


def test_category_rule_and_ranges():
    assert icd10.category_of("S72001A") == "S72" and icd10.category_of("I10") == "I10"
    assert icd10.in_range("O9A", "O00", "O9A") and icd10.in_range("O99", "O00", "O9A")  # digits before letters
    assert not icd10.in_range("P00", "O00", "O9A") and not icd10.in_range("O0", "O00", "O9A")
    assert icd10.in_range("W10", "V00", "X58") and not icd10.in_range("880", "E00", "E89")


def test_chapter_block_and_titles():
    assert (icd10.chapter_of("E119"), icd10.block_of("E119")) == ("4", "E08-E13")
    assert (icd10.chapter_of("S0262XA"), icd10.block_of("S0262XA")) == ("19", "S00-S09")  # by its category
    assert icd10.chapter_of("Q9Z") is None and icd10.block_of("Q9Z") is None
    assert icd10.describe("E119") == "Type 2 diabetes mellitus without complications"
    assert icd10.describe("Q9Z99") == "unknown title (not in the ICD-10-CM April 2026 release)"


def test_report_titles_follow_the_system():
    """The report's top-code table titles ICD-10 codes from the release and ICD-9 ones as before."""
    import numpy as np

    from promptehr.model.evaluation import html

    codes = ["E8809", "icd10:E8809", "icd10:S0262XA"]
    table = html.top_table("t", codes, {"train": np.array([0.3, 0.2, 0.1])}, "train", k=3)
    assert "Fall on stair/step NEC" in table
    assert "Other disorders of plasma-protein metabolism" in table
    assert "unknown title" in table and "Fracture of skull and facial bones" in table
