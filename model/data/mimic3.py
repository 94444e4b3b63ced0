"""MIMIC-III folder: PATIENTS, ADMISSIONS, DIAGNOSES_ICD (.csv or .csv.gz, headers in any case).

A visit is an admission (HADM_ID) from ADMITTIME to DISCHTIME (optional column; the stay and its
all-or-nothing rule are in assemble.py); its codes are DIAGNOSES_ICD.ICD9_CODE in SEQ_NUM order. Age is whole years from DOB to the first admission that has a diagnosis; MIMIC shifts the DOB
of patients over 89 so that they compute to about 300, hence the cap at 90. Rows with an empty
ICD9_CODE (full MIMIC-III has a few) are skipped; admissions without diagnoses are not visits. The
codes are ICD-9-CM: a dotted one (401.9) is stored undotted, one that is not ICD-9-CM shaped (4019,
V5861, E8889) is an error naming its line (model/data/systems.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from promptehr.model.data.assemble import (
    cap_age,
    clean_codes,
    first_visits,
    order_rows,
    to_patients,
    whole_years,
)
from promptehr.model.data.reading import (
    fail,
    find_table,
    parse_numbers,
    parse_sex,
    parse_times,
    read_table,
    require,
)
from promptehr.model.data.systems import resolve_codes
from promptehr.model.patient import Patient

SEX = {"M": "M", "F": "F"}


def read_patients(path: Path) -> pd.DataFrame:
    paths = [path]
    df = read_table(path, ["subject_id", "gender", "dob"])
    require(paths, df, ["subject_id", "gender", "dob"])
    dup = df["subject_id"].duplicated().to_numpy()
    if dup.any():
        fail(paths, df, dup, "repeated subject_id: expected one row per patient", column="subject_id")
    df["sex"] = parse_sex(paths, df, "gender", SEX)
    df["dob"] = parse_times(paths, df, "dob")
    return df.set_index("subject_id")


def read_admissions(path: Path) -> pd.DataFrame:
    paths = [path]
    df = read_table(path, ["subject_id", "hadm_id", "admittime", "dischtime"], optional=("dischtime",))
    require(paths, df, ["subject_id", "hadm_id", "admittime"])
    dup = df["hadm_id"].duplicated().to_numpy()
    if dup.any():
        fail(paths, df, dup, "repeated hadm_id: expected one row per admission", column="hadm_id")
    df["admittime"] = parse_times(paths, df, "admittime")
    if "dischtime" in df:
        df["dischtime"] = parse_times(paths, df, "dischtime")
    return df


def read_diagnoses(path: Path, code_column: str = "icd9_code", extra: tuple[str, ...] = ()) -> pd.DataFrame:
    paths = [path]
    df = read_table(path, ["subject_id", "hadm_id", "seq_num", code_column, *extra])
    require(paths, df, ["subject_id", "hadm_id"])
    df["seq"] = parse_numbers(paths, df, "seq_num")
    df["code"] = clean_codes(df[code_column])
    return df


def join_admissions(diag: pd.DataFrame, adm: pd.DataFrame, diag_path: Path, adm_path: Path) -> pd.DataFrame:
    """Diagnosis rows with their admission's time (and end, where `adm` has dischtime); a diagnosis of an
    unknown admission is an error."""
    by_hadm = adm.set_index("hadm_id").reindex(diag["hadm_id"])
    rows = diag[["subject_id", "hadm_id", "seq", "code", "_line", "_file"]].rename(columns={"subject_id": "patient_id", "hadm_id": "visit_id"})
    rows["time"] = by_hadm["admittime"].to_numpy()
    if "dischtime" in adm:
        rows["end"] = by_hadm["dischtime"].to_numpy()
    orphan = rows["time"].isna().to_numpy()
    if orphan.any():
        fail([diag_path], rows, orphan, f"hadm_id not found in {adm_path.name}: expected every diagnosis to belong to an admission", column="visit_id", name="hadm_id")
    # Otherwise the visit would silently land in another patient's record.
    other = np.asarray(by_hadm["subject_id"].array != rows["patient_id"].array, dtype=bool)  # compared in arrow
    if other.any():
        fail([diag_path], rows, other, f"subject_id differs from the admission's in {adm_path.name}: expected the same patient", column="patient_id", name="subject_id")
    return rows


def demographics(rows: pd.DataFrame, pat: pd.DataFrame, pat_path: Path, diag_path: Path) -> tuple[pd.Series, pd.Series]:
    """Age at first visit (whole years, capped) and sex, indexed by patient id."""
    first = first_visits(rows)
    unknown = pat.index.get_indexer(first.index) < 0  # (isin on arrow strings loops in Python)
    if unknown.any():
        fail([diag_path], first.reset_index(), unknown, f"subject_id not found in {pat_path.name}: expected every patient to be listed", column="patient_id", name="subject_id")
    p = pat.reindex(first.index)
    age = whole_years(p["dob"], first["time"].astype("datetime64[us]"))
    negative = (age < 0).to_numpy()
    if negative.any():
        fail([pat_path], p, negative, "date of birth after the first admission: expected a non-negative age", column="dob")
    return cap_age(age), p["sex"]


def load_mimic3(folder: Path, code_system: str | None = None) -> list[Patient]:
    folder = Path(folder)
    pat_path, adm_path, diag_path = (find_table(folder, n) for n in ("PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD"))
    pat = read_patients(pat_path)
    adm = read_admissions(adm_path)
    diag = resolve_codes([diag_path], read_diagnoses(diag_path), "icd9", code_system, name="icd9_code")
    rows = order_rows(join_admissions(diag, adm, diag_path, adm_path))
    age, sex = demographics(rows, pat, pat_path, diag_path)
    return to_patients(rows, age, sex, diag_path, end_paths=[adm_path], end_column="dischtime")
