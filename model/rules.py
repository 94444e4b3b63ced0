"""Sex and age validity rules for ICD-9-CM and ICD-10-CM codes: one table, used as logit masks and by
the validity report.

A rule names its code system, an inclusive range of categories of that system, the sex it allows
and/or the ages it allows, and where it comes from. A rule applies only to codes of its system (an
ICD-9 rule never matches an "icd10:" code, nor the other way round; see model/codes.py). Ranges
compare by category (icd9.category_key, icd10.in_range), so a rule holds for every code below its
categories, for codes missing from the tables, and for category tokens themselves.

Ages are whole years, as the CMS Medicare Code Editor (MCE) counts them: an age of 55.8 is 55, and
"under 1" is max_age=0. Sex is "F" or "M"; any other value (unknown) and a NaN age violate nothing,
because nothing can be said about them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from promptehr.model import icd9, icd10
from promptehr.model.codes import category_of, split

TABULAR = "ICD-9-CM Tabular List"
TABULAR_10 = "ICD-10-CM Tabular List (CMS, April 2026, as shipped by simple-icd-10-cm)"
MCE_SEX = "CMS Medicare Code Editor, edit 'Sex conflict'"
MCE_MATERNITY = "CMS Medicare Code Editor, edit 'Maternity diagnosis' age conflict (12-55 there; 10-55 here, per the issue)"
MCE_NEWBORN = "CMS Medicare Code Editor, edit 'Newborn diagnosis' age conflict (age 0)"
MCE_MATERNITY_10 = "CMS Medicare Code Editor (ICD-10), edit 'Maternity diagnosis' age conflict (ages 10-55 here, per the issue, as for ICD-9-CM)"
IN_RANGE = {"icd9": icd9.in_range, "icd10": icd10.in_range}  # (bare category, first, last) -> bool


@dataclass(frozen=True)
class Rule:
    name: str
    first: str  # first category of the inclusive range, e.g. "630"
    last: str  # last category, e.g. "679"
    source: str
    sex: str | None = None  # the only sex allowed, or None for either
    min_age: int | None = None  # youngest allowed age in whole years
    max_age: int | None = None  # oldest allowed age in whole years
    system: str = "icd9"  # the code system of first, last and of the codes the rule applies to

    @property
    def kind(self) -> str:
        """"sex" or "age": what the rule constrains (the table keeps one concern per rule)."""
        return "sex" if self.sex is not None else "age"

    def covers(self, code: str) -> bool:
        system, category = split(category_of(code))
        return system == self.system and IN_RANGE[system](category, self.first, self.last)

    def sex_ok(self, sex: str) -> bool:
        return self.sex is None or sex not in ("F", "M") or sex == self.sex

    def age_ok(self, age: float) -> bool:
        if age is None or math.isnan(age):
            return True
        years = math.floor(age)
        return (self.min_age is None or years >= self.min_age) and (self.max_age is None or years <= self.max_age)


def _sex(name: str, first: str, last: str, sex: str, source: str, system: str = "icd9") -> Rule:
    return Rule(f"{name}: {'female' if sex == 'F' else 'male'} only", first, last, source, sex=sex, system=system)


def _age(name: str, first: str, last: str, min_age: int, max_age: int, source: str, system: str = "icd9") -> Rule:
    ages = "under 1" if max_age == 0 else f"ages {min_age}-{max_age}"
    return Rule(f"{name}: {ages}", first, last, source, min_age=min_age, max_age=max_age, system=system)


def _span(first: str, last: str) -> str:
    return first if first == last else f"{first}-{last}"


def _sex10(name: str, first: str, last: str, sex: str) -> Rule:
    return _sex(f"{name} (ICD-10-CM)", first, last, sex, f"{TABULAR_10}, {_span(first, last)}; {MCE_SEX}", "icd10")


def _age10(name: str, first: str, last: str, min_age: int, max_age: int, source: str) -> Rule:
    return _age(f"{name} (ICD-10-CM)", first, last, min_age, max_age, f"{TABULAR_10}, {_span(first, last)}; {source}", "icd10")


# Sex-specific categories are those whose Tabular List titles name the organ of one sex; each is on
# the MCE sex-conflict lists. Categories with mixed content (233, 236, 752, V10 ...) are left out,
# because a whole-category rule would wrongly forbid half of them.
RULES: tuple[Rule, ...] = (
    _sex("Pregnancy, childbirth and the puerperium", "630", "679", "F", f"{TABULAR}, chapter 11; {MCE_SEX}"),
    _age("Pregnancy, childbirth and the puerperium", "630", "679", 10, 55, f"{TABULAR}, chapter 11; {MCE_MATERNITY}"),
    _sex("Supervision of pregnancy, postpartum care", "V22", "V24", "F", f"{TABULAR}, V22-V24; {MCE_SEX}"),
    _age("Supervision of pregnancy, postpartum care", "V22", "V24", 10, 55, f"{TABULAR}, V22-V24; {MCE_MATERNITY}"),
    # V27 is "for use on the mother's record", V28 is antenatal screening of the mother.
    _sex("Outcome of delivery, antenatal screening", "V27", "V28", "F", f"{TABULAR}, V27-V28; {MCE_SEX}"),
    _age("Outcome of delivery, antenatal screening", "V27", "V28", 10, 55, f"{TABULAR}, V27-V28; {MCE_MATERNITY}"),
    _sex("Malignant neoplasm of female breast", "174", "174", "F", f"{TABULAR}, 174; {MCE_SEX}"),
    _sex("Malignant neoplasm of male breast", "175", "175", "M", f"{TABULAR}, 175; {MCE_SEX}"),
    _sex("Malignant neoplasm of female genital organs", "179", "184", "F", f"{TABULAR}, 179-184; {MCE_SEX}"),
    _sex("Malignant neoplasm of male genital organs", "185", "187", "M", f"{TABULAR}, 185-187; {MCE_SEX}"),
    _sex("Benign neoplasm of uterus, ovary, other female genital organs", "218", "221", "F", f"{TABULAR}, 218-221; {MCE_SEX}"),
    _sex("Benign neoplasm of male genital organs", "222", "222", "M", f"{TABULAR}, 222; {MCE_SEX}"),
    _sex("Ovarian dysfunction", "256", "256", "F", f"{TABULAR}, 256; {MCE_SEX}"),
    _sex("Testicular dysfunction", "257", "257", "M", f"{TABULAR}, 257; {MCE_SEX}"),
    _sex("Diseases of male genital organs", "600", "608", "M", f"{TABULAR}, chapter 10, 600-608; {MCE_SEX}"),
    _sex("Diseases of female genital organs", "614", "629", "F", f"{TABULAR}, chapter 10, 614-629; {MCE_SEX}"),
    # The ICD-9-CM guidelines let chapter 15 codes follow a patient for life; the MCE newborn edit,
    # and this project, treat them as newborn-only so that generated adults never carry them.
    _age("Certain conditions originating in the perinatal period", "760", "779", 0, 0, f"{TABULAR}, chapter 15; {MCE_NEWBORN}"),
    _age("Liveborn infants according to type of birth", "V30", "V39", 0, 0, f"{TABULAR}, V30-V39; {MCE_NEWBORN}"),
    # ICD-10-CM: the same concerns, by the ICD-10-CM chapters and blocks.
    _sex10("Pregnancy, childbirth and the puerperium", "O00", "O9A", "F"),
    _age10("Pregnancy, childbirth and the puerperium", "O00", "O9A", 10, 55, MCE_MATERNITY_10),
    # Z33-Z3A are the mother's encounters, except Z38 (liveborn infants: the newborn's record, either
    # sex), which is carved out of the range and is a newborn rule below.
    _sex10("Pregnant state, supervision of pregnancy, antenatal screening, outcome of delivery", "Z33", "Z37", "F"),
    _age10("Pregnant state, supervision of pregnancy, antenatal screening, outcome of delivery", "Z33", "Z37", 10, 55, MCE_MATERNITY_10),
    _sex10("Postpartum care, weeks of gestation", "Z39", "Z3A", "F"),
    _age10("Postpartum care, weeks of gestation", "Z39", "Z3A", 10, 55, MCE_MATERNITY_10),
    _sex10("Malignant neoplasms of female genital organs", "C51", "C58", "F"),
    _sex10("Malignant neoplasms of male genital organs", "C60", "C63", "M"),
    _sex10("Benign neoplasms of uterus, ovary, other female genital organs", "D25", "D28", "F"),
    _sex10("Benign neoplasm of male genital organs", "D29", "D29", "M"),
    _sex10("Ovarian dysfunction", "E28", "E28", "F"),
    _sex10("Testicular dysfunction", "E29", "E29", "M"),
    _sex10("Diseases of male genital organs", "N40", "N53", "M"),
    _sex10("Noninflammatory and inflammatory disorders of female genital organs", "N70", "N98", "F"),
    # As for ICD-9-CM chapter 15: newborn-only here, although the guidelines let P codes follow a patient.
    _age10("Certain conditions originating in the perinatal period", "P00", "P96", 0, 0, MCE_NEWBORN),
    _age10("Liveborn infants according to place of birth and type of delivery", "Z38", "Z38", 0, 0, MCE_NEWBORN),
)


@lru_cache(maxsize=8192)
def _rules_for_category(category: str) -> tuple[Rule, ...]:
    system, bare = split(category)
    in_range = IN_RANGE[system]
    return tuple(r for r in RULES if r.system == system and in_range(bare, r.first, r.last))


def rules_for(code: str) -> tuple[Rule, ...]:
    """The rules of the code's system whose range holds its category (cached per category: about
    1,200 ICD-9-CM and 1,900 ICD-10-CM exist)."""
    return _rules_for_category(category_of(code))


def violations(code: str, sex: str, age: float) -> list[Rule]:
    return [r for r in rules_for(code) if not (r.sex_ok(sex) and r.age_ok(age))]


def is_allowed(code: str, sex: str, age: float) -> bool:
    return not violations(code, sex, age)


@dataclass(frozen=True)
class AllowedMatrix:
    """Per-code constraints folded into arrays, so a batch mask is a few numpy broadcasts.

    For each code the allowed sexes and the intersection of its age ranges; a code with no rule
    allows both sexes and ages -inf..inf.
    """

    codes: tuple[str, ...]
    female_ok: np.ndarray  # (n_codes,) bool
    male_ok: np.ndarray  # (n_codes,) bool
    min_age: np.ndarray  # (n_codes,) float, whole years
    max_age: np.ndarray  # (n_codes,) float, whole years

    def sex_mask(self, sexes: np.ndarray) -> np.ndarray:
        """(n_patients, n_codes): True where the code is allowed for that patient's sex."""
        sexes = np.asarray(sexes).reshape(-1, 1)
        ok = np.ones((sexes.shape[0], len(self.codes)), dtype=bool)
        ok = np.where(sexes == "F", self.female_ok, ok)
        return np.where(sexes == "M", self.male_ok, ok)

    def age_mask(self, ages: np.ndarray) -> np.ndarray:
        """(n_patients, n_codes): True where the code is allowed at that patient's age (NaN: always)."""
        years = np.floor(np.asarray(ages, dtype=float)).reshape(-1, 1)
        inside = (years >= self.min_age) & (years <= self.max_age)
        return inside | np.isnan(years)

    def mask(self, sexes: np.ndarray, ages: np.ndarray) -> np.ndarray:
        return self.sex_mask(sexes) & self.age_mask(ages)


def _fold(rules: tuple[Rule, ...]) -> tuple[bool, bool, float, float]:
    female_ok = all(r.sex in (None, "F") for r in rules)
    male_ok = all(r.sex in (None, "M") for r in rules)
    lo = max((r.min_age for r in rules if r.min_age is not None), default=-math.inf)
    hi = min((r.max_age for r in rules if r.max_age is not None), default=math.inf)
    return female_ok, male_ok, float(lo), float(hi)


def allowed_matrix(codes: Sequence[str]) -> AllowedMatrix:
    """Fold the rules over a vocabulary once; call .mask(sexes, ages) per batch.

    Tokens that are not codes (specials such as "<s>") match no rule and are always allowed.
    """
    folded = [_fold(rules_for(c)) for c in codes]
    columns = list(zip(*folded)) if folded else [(), (), (), ()]
    return AllowedMatrix(
        codes=tuple(codes),
        female_ok=np.array(columns[0], dtype=bool),
        male_ok=np.array(columns[1], dtype=bool),
        min_age=np.array(columns[2], dtype=float),
        max_age=np.array(columns[3], dtype=float),
    )


def allowed_mask(codes: Sequence[str], sexes: np.ndarray, ages: np.ndarray) -> np.ndarray:
    """(n_patients, n_codes) bool: is codes[j] allowed for a patient of sexes[i] aged ages[i]?"""
    return allowed_matrix(codes).mask(sexes, ages)
