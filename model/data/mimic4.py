"""MIMIC-IV folder (the folder holding hosp/, or hosp/ itself): patients, admissions, diagnoses_icd.

Both versions are kept: icd_version 9 rows are ICD-9-CM codes, 10 rows ICD-10-CM codes ("icd10:"
in memory, see model/codes.py); each code must have its system's shape, and any other icd_version is
an error naming its line. code_system="icd9" (or "icd10") keeps that version's rows only, so that an
admission coded in the other is not a visit and a patient with only such admissions is dropped (the
ICD-9-only reading of earlier versions). MIMIC-IV has no date of birth: age at an admission is
anchor_age + (year(admittime) - anchor_year), taken at the first admission kept and capped at 90.
A visit runs from admittime to dischtime (optional column), as in MIMIC-III (mimic3.py).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from promptehr.model.data.assemble import cap_age, first_visits, order_rows, to_patients
from promptehr.model.data.mimic3 import join_admissions, read_admissions, read_diagnoses
from promptehr.model.data.reading import (
    fail,
    find_table,
    parse_numbers,
    parse_sex,
    read_table,
    require,
)
from promptehr.model.data.systems import declared_systems, resolve_codes
from promptehr.model.patient import Patient


def hosp_folder(folder: Path) -> Path:
    sub = Path(folder) / "hosp"
    return sub if sub.is_dir() else Path(folder)


def read_patients(path: Path) -> pd.DataFrame:
    paths = [path]
    df = read_table(path, ["subject_id", "gender", "anchor_age", "anchor_year"])
    require(paths, df, ["subject_id", "gender", "anchor_age", "anchor_year"])
    dup = df["subject_id"].duplicated().to_numpy()
    if dup.any():
        fail(paths, df, dup, "repeated subject_id: expected one row per patient", column="subject_id")
    df["sex"] = parse_sex(paths, df, "gender", {"M": "M", "F": "F"})
    df["anchor_age"] = parse_numbers(paths, df, "anchor_age")
    df["anchor_year"] = parse_numbers(paths, df, "anchor_year")
    negative = (df["anchor_age"] < 0).to_numpy()
    if negative.any():
        fail(paths, df, negative, "negative age: expected anchor_age >= 0", column="anchor_age")
    return df.set_index("subject_id")


def load_mimic4(folder: Path, code_system: str | None = None) -> list[Patient]:
    hosp = hosp_folder(folder)
    pat_path, adm_path, diag_path = (find_table(hosp, n) for n in ("patients", "admissions", "diagnoses_icd"))
    pat = read_patients(pat_path)
    adm = read_admissions(adm_path)
    diag = read_diagnoses(diag_path, code_column="icd_code", extra=("icd_version",))
    versions = declared_systems([diag_path], diag, "icd_version", "9 (ICD-9-CM) or 10 (ICD-10-CM)")
    diag = resolve_codes([diag_path], diag, versions, code_system, name="icd_code")
    rows = order_rows(join_admissions(diag, adm, diag_path, adm_path))
    first = first_visits(rows)
    unknown = pat.index.get_indexer(first.index) < 0  # (isin on arrow strings loops in Python)
    if unknown.any():
        fail([diag_path], first.reset_index(), unknown, f"subject_id not found in {pat_path.name}: expected every patient to be listed", column="patient_id", name="subject_id")
    p = pat.reindex(first.index)
    age = p["anchor_age"] + (first["time"].astype("datetime64[us]").dt.year - p["anchor_year"])
    negative = (age < 0).to_numpy()
    if negative.any():
        fail([pat_path], p, negative, "admission before birth: expected a non-negative age at the first admission", column="anchor_year")
    return to_patients(rows, cap_age(age), p["sex"], diag_path, end_paths=[adm_path], end_column="dischtime")
