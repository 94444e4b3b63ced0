"""The ICD-10-CM diagnosis hierarchy, from the `simple-icd-10-cm` package (the CMS tabular it ships).

Codes here are bare and undotted ("I10", "E119", "S72001A"); model/codes.py adds the "icd10:" prefix
that keeps them apart from ICD-9-CM codes in memory. The category of a code is its first 3 characters,
a rule that needs no table, so it holds for codes of other years missing from the release too.

Two sources inside the package, both cached:
- the release's code list (one line per chapter, block, category and code): which codes are known.
  Read as a file, because importing the package parses the whole tabular XML (measured 4.2 s on the
  2-core build machine) while the list reads in 0.02 s; the data loaders only need this.
- the package's tree (imported on first use): chapter, block and description of a code.
"""
from __future__ import annotations

import importlib.util
import re
import warnings
from functools import lru_cache
from pathlib import Path

# An undotted ICD-10-CM diagnosis code: a letter, a digit, a letter or digit (the category), then up
# to 4 letters or digits. [0-9] rather than \d (which may match any Unicode digit); grouped for
# re.fullmatch / pandas str.fullmatch.
CODE_PATTERN = r"(?:[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4})"
CATEGORY_PATTERN = r"[A-Z][0-9][0-9A-Z]"
UNKNOWN = "unknown title"


def _code_list_file() -> Path | None:
    """The package's code list, found without importing the package (see the module docstring)."""
    spec = importlib.util.find_spec("simple_icd_10_cm")
    if spec is None or not spec.submodule_search_locations:
        return None
    hits = sorted((Path(spec.submodule_search_locations[0]) / "data").glob("code-list-*.txt"))
    return hits[-1] if hits else None


@lru_cache(maxsize=1)
def release() -> str:
    """The release the package ships, from its code list's name ("April 2026"); "" if not found."""
    path = _code_list_file()
    m = re.fullmatch(r"code-list-(.+)\.txt", path.name) if path else None
    return m.group(1).replace("-", " ") if m else ""


@lru_cache(maxsize=1)
def release_codes() -> frozenset[str]:
    """Every category and code of the release, undotted (chapters and blocks left out)."""
    path = _code_list_file()
    if path is not None:
        names = path.read_text(encoding="utf-8").split()
    else:  # a package layout without the file: ask the tree (slow import, same answer)
        names = _tree().get_all_codes(with_dots=False)
    pattern = re.compile(CODE_PATTERN)
    return frozenset(n for n in names if pattern.fullmatch(n))


@lru_cache(maxsize=1)
def _tree():
    # Imported here: the import parses the tabular XML (4.2 s, see the module docstring). Its loader
    # uses importlib.resources.read_text, deprecated since Python 3.11: not ours to fix, not shown.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm

    return simple_icd_10_cm


def is_known(code: str) -> bool:
    """Is the code a category or code (billable or not) of the release?"""
    return code in release_codes()


def is_valid(code: str) -> bool:
    """Is the code ICD-10-CM shaped? True for codes of other years too (see is_known for the release)."""
    return re.fullmatch(CODE_PATTERN, code) is not None


def category_of(code: str) -> str:
    """The first 3 characters; works for codes missing from the release, and dotted ones."""
    return code[:3]


def in_range(category: str, first: str, last: str) -> bool:
    """Is a category inside the inclusive range first..last ("O9A" in "O00".."O9A")?

    Categories are 3 characters of ASCII, digits before letters, so plain string order is the
    tabular's order (O99 < O9A, V99 < W00).
    """
    return re.fullmatch(CATEGORY_PATTERN, category) is not None and first <= category <= last


def _ancestors(code: str) -> list[str]:
    """The code's ancestors, nearest first (block, then chapter last); its category's if unknown; []."""
    tree = _tree()
    for c in (code, category_of(code)):
        if is_known(c):
            return tree.get_ancestors(c)
    return []


def chapter_of(code: str) -> str | None:
    """The chapter number ("4" for E119) of the code or of its category; None if neither is known."""
    up = _ancestors(code)
    return up[-1] if up else None


def block_of(code: str) -> str | None:
    """The block ("E08-E13" for E119) of the code or of its category; None if neither is known."""
    blocks = [a for a in _ancestors(code) if "-" in a]
    return blocks[0] if blocks else None


def describe(code: str) -> str:
    """The release's title; for a code missing from it, `unknown title` and its category's title."""
    tree = _tree()
    if is_known(code):
        return tree.get_description(code)
    category = category_of(code)
    if is_known(category):
        return f"{UNKNOWN} (not in the ICD-10-CM {release()} release); category {category}: {tree.get_description(category)}"
    return f"{UNKNOWN} (not in the ICD-10-CM {release()} release)"
