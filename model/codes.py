"""Diagnosis codes and their systems: the one place that knows how a code string names its system.

A code in memory is a plain string. ICD-9-CM codes are bare, as they always were ("4019", "E8809",
"V5861"); ICD-10-CM codes carry the prefix "icd10:" ("icd10:I10", "icd10:E8809"). So the ICD-9 E8809
(fall from stairs) and the ICD-10 E8809 (a metabolic disorder) are different strings, hence different
vocabulary tokens, co-occurrence keys and report rows, and older ICD-9 checkpoints, cohorts and
reports read unchanged. Categories are qualified the same way: category_of("icd10:E8809") is
"icd10:E88" (ICD-10-CM: the first 3 characters), category_of("E8809") is "E880" (ICD-9-CM: the first
3, or 4 for E codes).

On input, "icd9:4019" is accepted as ICD-9 and stored bare; codes may be typed dotted ("401.9").
"""
from __future__ import annotations

from promptehr.model import icd9, icd10

SYSTEMS = ("icd9", "icd10")
NAMES = {"icd9": "ICD-9-CM", "icd10": "ICD-10-CM"}
PREFIX = {"icd9": "", "icd10": "icd10:"}  # how a system is written in memory
# Spellings accepted for a system name (case-insensitive): data columns, CLI, API.
ALIASES = {"icd9": "icd9", "9": "icd9", "icd-9": "icd9", "icd-9-cm": "icd9", "icd9cm": "icd9",
           "icd10": "icd10", "10": "icd10", "icd-10": "icd10", "icd-10-cm": "icd10", "icd10cm": "icd10"}
PATTERNS = {"icd9": icd9.CODE_PATTERN, "icd10": icd10.CODE_PATTERN}  # bare, undotted
EXAMPLES = {"icd9": "4019, 0389, V5861 or E8889", "icd10": "I10, E119, Z7901 or S72001A"}


def parse_system(name) -> str:
    """"icd9" or "icd10" from any accepted spelling (icd9, ICD-10-CM, 9, 10 ...); ValueError otherwise."""
    key = str(name).strip().lower().removesuffix(".0")  # 9.0 / 10.0: a number column read as floats
    if key not in ALIASES:
        raise ValueError(f"unknown code system {str(name)[:40]!r}: expected icd9 or icd10 (also 9 or 10)")
    return ALIASES[key]


def qualify(code: str, system: str) -> str:
    """The in-memory string of a bare, undotted code of `system`."""
    return PREFIX[system] + code


def split(code: str) -> tuple[str, str]:
    """(system, bare code) of an in-memory code; a string without a prefix is ICD-9 (so are specials)."""
    head, sep, tail = code.partition(":")
    if sep and head in ("icd10", "icd9"):
        return head, tail
    return "icd9", code


def system_of(code: str) -> str:
    return split(code)[0]


def bare(code: str) -> str:
    return split(code)[1]


def undot(code: str) -> str:
    """Upper case, without blanks or the dot: "401.9" -> "4019", "e11.9" -> "E119"."""
    return code.strip().replace(".", "").upper()


def normalize(code: str, system: str | None = None) -> str:
    """A code as users type it, in its in-memory form: "401.9" -> "4019", "icd10:E11.9" -> "icd10:E119".

    A "icd9:" / "icd10:" prefix (any case) names the system; else `system` does; else it is ICD-9, as
    every bare code is. A prefix that disagrees with `system` is a ValueError.
    """
    text = code.strip()
    head, sep, tail = text.partition(":")
    if sep:
        named = parse_system(head)
        if system is not None and parse_system(system) != named:
            raise ValueError(f"code {code!r} names {named} but {parse_system(system)} was given")
        return qualify(undot(tail), named)
    return qualify(undot(text), parse_system(system) if system is not None else "icd9")


def category_of(code: str) -> str:
    """The code's category, in the code's system: "4019" -> "401", "icd10:E8809" -> "icd10:E88"."""
    system, code = split(code)
    if system == "icd10":
        return qualify(icd10.category_of(code), system)
    return icd9.category_of(code)


def is_valid(code: str) -> bool:
    """Shaped like a code of its system (known to the tables or not)."""
    system, code = split(code)
    return icd10.is_valid(code) if system == "icd10" else icd9.is_valid(code)


def is_known(code: str) -> bool:
    """In its system's table: the ICD-9-CM table of model/icd9.py, or the ICD-10-CM release."""
    system, code = split(code)
    return icd10.is_known(code) if system == "icd10" else icd9.is_known(code)


def describe(code: str, short: bool = False) -> str:
    """The code's title. ICD-9-CM: its own, else its category's, else "" (short=True: the short title).
    ICD-10-CM: the release's (which has no short titles), or `unknown title` and the category's."""
    system, code = split(code)
    return icd10.describe(code) if system == "icd10" else icd9.describe(code, short)


def label(code: str) -> str:
    """How a person reads a code: "4019 (ICD-9-CM)", "I10 (ICD-10-CM)"."""
    system, code = split(code)
    return f"{code} ({NAMES[system]})"


def systems_in(codes) -> tuple[str, ...]:
    """The systems that occur among `codes`, in SYSTEMS order."""
    found = {system_of(c) for c in codes}
    return tuple(s for s in SYSTEMS if s in found)
