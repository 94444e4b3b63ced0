"""Long-format CSV or Parquet file, or a folder of them: `patient_id, visit_id, visit_time, code[, visit_end, code_system, age, sex]`.

One row per diagnosis, the interchange format of other EHR tools (and our own long CSV export).
- visit_time: ISO dates/datetimes, or plain numbers (e.g. visit numbers, or days since an index date);
  one kind per data set. A visit's time is the earliest time given on its rows. Dates give the
  records their time (visit_days, start_date); numbers only order the visits (assemble.py).
- visit_end (optional): the visit's end, ISO dates/datetimes ("YYYY-MM-DD HH:MM:SS" as our export
  writes it); a visit's end is the latest given on its rows. It needs dates in visit_time (a number
  is no date to end after: an error). Stays (los_days) need an end on every visit of the data set:
  where some are missing (empty values, or some of several files without the column) all are left
  out, with a warning (assemble.py); without the column there are none, and no warning.
- codes keep the order of the file within a visit (there is no seq column); each is an ICD-9-CM or
  ICD-10-CM code, undotted or dotted (4019, 401.9, V5861, I10, E11.9), else an error names its file,
  line (or Parquet row) and value.
- code_system (optional): icd9 or icd10 (also 9 or 10) per row. Without it each file is read in the
  one system its codes name, and a file whose codes could be either is refused; a code may also
  carry its system ("icd10:I10"). model/data/systems.py has the rules.
- age is the patient's age at the first visit: the first non-empty value in time order; capped at 90.
- sex accepts M/F and male/female in any case; a patient's first non-empty value is used.
- age and sex are optional columns. Without them a patient gets age NaN and sex "U" (unknown); the
  rest of the system expects M/F and a number, so such data is fit for statistics, not for training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from promptehr.model.data.assemble import cap_age, clean_codes, order_rows, to_patients
from promptehr.model.data.reading import (
    TABLE_SUFFIXES,
    fail,
    is_table,
    parse_numbers,
    parse_sex,
    parse_times,
    read_table,
    require,
)
from promptehr.model.data.systems import declared_systems, resolve_codes
from promptehr.model.errors import DataError
from promptehr.model.patient import Patient

COLUMNS = ["patient_id", "visit_id", "visit_time", "code", "visit_end", "code_system", "age", "sex"]
OPTIONAL = ("visit_end", "code_system", "age", "sex")
SEX = {"M": "M", "F": "F", "male": "M", "female": "F"}


def long_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if is_table(p))
    return [path]


def _as_text(s: pd.Series) -> pd.Series:
    # Parquet may hold ids as integers; the Patient wants strings either way.
    return s if pd.api.types.is_string_dtype(s) else s.astype("str").where(s.notna())


def _times(paths: list[Path], df: pd.DataFrame) -> tuple[str, pd.Series]:
    """("datetime"|"number", values) for visit_time."""
    s = df["visit_time"]
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime", s.astype("datetime64[us]")
    if pd.api.types.is_numeric_dtype(s):
        return "number", s.astype(float)
    as_number = pd.to_numeric(s, errors="coerce")
    if (as_number.notna() | s.isna()).all():
        return "number", as_number.astype(float)
    return "datetime", parse_times(paths, df, "visit_time")


def _ends(paths: list[Path], df: pd.DataFrame, kind: str) -> pd.Series:
    """visit_end as datetimes (NaT where empty or the column is absent)."""
    if "visit_end" not in df:
        return pd.Series(pd.NaT, index=df.index, dtype="datetime64[us]")
    given = df["visit_end"].notna().to_numpy()
    if kind == "number" and given.any():
        fail(paths, df, given, "visit_end needs dates in visit_time: expected visit_time as dates, or no visit_end", column="visit_end")
    return parse_times(paths, df, "visit_end")


def read_long(paths: list[Path], code_system: str | None = None) -> pd.DataFrame:
    frames, kinds, declared, with_end = [], set(), [], False
    for i, path in enumerate(paths):
        df = read_table(path, COLUMNS, file_index=i, optional=OPTIONAL)
        for c in ("patient_id", "visit_id", "code"):
            df[c] = _as_text(df[c])
        require(paths, df, ["patient_id", "visit_id", "visit_time"])
        kind, df["time"] = _times(paths, df)
        kinds.add(kind)
        with_end |= "visit_end" in df
        df["end"] = _ends(paths, df, kind)
        df["age"] = parse_numbers(paths, df, "age") if "age" in df else np.nan
        negative = (df["age"] < 0).to_numpy()
        if negative.any():
            fail(paths, df, negative, "negative age: expected an age in years >= 0", column="age")
        df["sex"] = parse_sex(paths, df, "sex", SEX) if "sex" in df else None
        df["code"] = clean_codes(df["code"].astype("str"))
        declared.append(declared_systems(paths, df, "code_system", "icd9 or icd10 (also 9 or 10)") if "code_system" in df
                        else np.full(len(df), -1, dtype=np.int8))
        frames.append(df[["patient_id", "visit_id", "time", "end", "code", "age", "sex", "_line", "_file"]])
    if len(kinds) > 1:
        raise DataError(paths[0], "visit_time is a date in some files and a number in others: expected one kind", column="visit_time")
    rows = resolve_codes(paths, pd.concat(frames, ignore_index=True), np.concatenate(declared), code_system)
    rows["time"] = rows.groupby(["patient_id", "visit_id"], sort=False)["time"].transform("min")
    rows["seq"] = np.nan  # file order decides within a visit (order_rows breaks ties by row position)
    # Ends only mean something after dates, and only where some file has the column (assemble.py).
    return rows if with_end and kinds == {"datetime"} else rows.drop(columns="end")


def load_long(path: Path, code_system: str | None = None) -> list[Patient]:
    paths = long_files(path)
    if not paths:
        raise DataError(path, f"no data files: expected {', '.join(TABLE_SUFFIXES)} files with columns {', '.join(COLUMNS[:4])}")
    rows = order_rows(read_long(paths, code_system))
    # groupby().first() skips missing values: the first non-empty age/sex in time order.
    per_patient = rows.groupby("patient_id", sort=True)[["age", "sex"]].first()
    sex = per_patient["sex"].astype(object).where(per_patient["sex"].notna(), "U")
    return to_patients(rows, cap_age(per_patient["age"].astype(float)), sex, paths[0], end_paths=paths, end_column="visit_end")
