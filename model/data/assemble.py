"""The steps every format shares: diagnosis rows in a common long shape -> ordered, de-duplicated visits
-> list[Patient].

The common shape is one row per diagnosis: `patient_id`, `visit_id` (strings), `time` (datetime64 or
float; the visit's time), `seq` (float, the code's position in its visit; NaN sorts last) and `code`,
and optionally `end` (datetime64, the visit's end; NaT where unknown), where the source has one.
All of it is vectorised: the only Python loops run over visits and patients, never over rows.

Time (Patient.visit_days / los_days / start_date) comes from calendar dates, the time of day dropped:
- datetime `time`: visit_days are each visit's date minus the patient's first visit's date (first 0),
  start_date that first date. A visit's time is the earliest on its rows (the loaders see to that).
- float `time` (plain visit numbers, or day offsets from no known date) orders the visits and
  nothing more: numbers are not dates, so such records carry no time at all (visit_days None).
- los_days is each visit's end date minus its start date, its end being the latest on its rows. It is
  all or nothing for a data set: where any visit has no end (no `end` column: silently; some ends
  missing: a warning with the count), every patient's los_days is None, so that the model never learns
  from a mix of known stays and unknown ones. An end before its start (full MIMIC has a few
  dischtime < admittime) is a 0-day stay, with a warning naming the file and the count.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from promptehr.model.errors import DataError
from promptehr.model.patient import Patient

MAX_AGE = 90  # ages above 89 are shifted or unreliable in the sources; the model sees 90 for all of them


def clean_codes(codes: pd.Series) -> pd.Series:
    # Surrounding blanks are not part of a code; a blank code is a missing one.
    codes = codes.str.strip()
    return codes.where(codes != "")


def order_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by patient id, visit time, visit id, seq, source order; empty and repeated codes dropped."""
    rows = rows[rows["code"].notna()]
    p, _ = pd.factorize(rows["patient_id"], sort=True)
    v, _ = pd.factorize(rows["visit_id"], sort=True)
    t = rows["time"].to_numpy()
    t = t.astype("datetime64[us]").astype(np.int64) if np.issubdtype(t.dtype, np.datetime64) else t.astype(float)
    seq = np.nan_to_num(rows["seq"].to_numpy(dtype=float), nan=np.inf)
    order = np.lexsort((np.arange(len(rows)), seq, v, t, p))
    rows = rows.iloc[order].assign(_p=p[order], _v=v[order])  # integer keys: cheaper than strings later
    c, _ = pd.factorize(rows["code"])
    # duplicated() keeps the first occurrence, i.e. the lowest seq within the visit.
    dup = pd.DataFrame({"p": rows["_p"].to_numpy(), "v": rows["_v"].to_numpy(), "c": c}).duplicated().to_numpy()
    return rows[~dup].reset_index(drop=True)


def first_visits(rows: pd.DataFrame) -> pd.DataFrame:
    """Per patient (index, in patient order): the time of the first visit and the row it came from."""
    return rows.groupby("patient_id", sort=True).head(1).set_index("patient_id")


def whole_years(start: pd.Series, end: pd.Series) -> pd.Series:
    """Completed years from start to end (birthday arithmetic, not days / 365.25)."""
    years = end.dt.year - start.dt.year
    before_birthday = (end.dt.month < start.dt.month) | ((end.dt.month == start.dt.month) & (end.dt.day < start.dt.day))
    return (years - before_birthday.astype(int)).astype(float)


def cap_age(age: pd.Series) -> pd.Series:
    return age.clip(upper=MAX_AGE)


NO_DAY = np.iinfo(np.int64).min  # NaT as calendar days: below every real day, so a maximum skips it


def calendar_days(values: np.ndarray) -> np.ndarray:
    """datetime64 -> int64 days since 1970-01-01 of each value's calendar date (NaT -> NO_DAY)."""
    return values.astype("datetime64[D]").astype(np.int64)


def visit_days(rows: pd.DataFrame, vstart: np.ndarray, pstart: np.ndarray, pend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each visit's start day, its days since its patient's first visit) from a datetime `time`."""
    day = calendar_days(rows["time"].to_numpy()[vstart])
    return day, day - np.repeat(day[pstart], pend - pstart)


def stays(rows: pd.DataFrame, vstart: np.ndarray, start_day: np.ndarray, end_paths: list[Path], end_column: str) -> np.ndarray | None:
    """Each visit's stay in days (end date - start date), or None for the data set (module docstring)."""
    if "end" not in rows:
        return None
    end_day = np.maximum.reduceat(calendar_days(rows["end"].to_numpy()), vstart)
    missing = end_day == NO_DAY
    if missing.any():
        warnings.warn(f"{_files(end_paths)}: {int(missing.sum()):,} of {len(missing):,} visits have no end date "
                      f"({end_column}): lengths of stay are left out for the whole data set", UserWarning, stacklevel=3)
        return None
    stay = end_day - start_day
    early = stay < 0
    if early.any():
        first = vstart[early][0]
        files = end_paths if len(end_paths) == 1 else sorted({end_paths[f] for f in rows["_file"].to_numpy()[vstart[early]]})
        warnings.warn(f"{_files(files)}: {int(early.sum()):,} visits end before they start ({end_column} before the "
                      f"visit's start date; the first is visit {rows['visit_id'].iat[first]} of patient "
                      f"{rows['patient_id'].iat[first]}): their stays are taken as 0 days", UserWarning, stacklevel=3)
        stay[early] = 0
    return stay


def _files(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths)


def to_patients(rows: pd.DataFrame, age: pd.Series, sex: pd.Series, source: str | Path, *,
                end_paths: list[Path] | None = None, end_column: str = "end") -> list[Patient]:
    """Build Patients from the output of order_rows; `age` and `sex` are indexed by patient id.

    `end_paths` and `end_column` name where the visits' ends were read (for the warnings; default
    `source`); several paths are indexed by the rows' `_file`.
    """
    if len(rows) == 0:
        raise DataError(source, "empty data set: expected at least one patient with a diagnosis code")
    pid = rows["_p"].to_numpy()
    vid = rows["_v"].to_numpy()
    codes = rows["code"].to_numpy(dtype=object).tolist()
    n = len(codes)
    new_visit = np.ones(n, dtype=bool)
    new_visit[1:] = (pid[1:] != pid[:-1]) | (vid[1:] != vid[:-1])
    vstart = np.flatnonzero(new_visit)
    vend = np.append(vstart[1:], n)
    visits = [codes[a:b] for a, b in zip(vstart.tolist(), vend.tolist())]
    vpid = pid[vstart]
    new_patient = np.ones(len(vstart), dtype=bool)
    new_patient[1:] = vpid[1:] != vpid[:-1]
    pstart = np.flatnonzero(new_patient)
    pend = np.append(pstart[1:], len(vstart))
    ids = rows["patient_id"].iloc[vstart[pstart]].tolist()
    ages = age.reindex(ids).to_numpy(dtype=float).tolist()
    sexes = sex.reindex(ids).to_numpy(dtype=object).tolist()
    spans = list(zip(pstart.tolist(), pend.tolist()))
    days = los = starts = [None] * len(spans)
    if pd.api.types.is_datetime64_any_dtype(rows["time"]):
        start_day, since_first = visit_days(rows, vstart, pstart, pend)
        since_first = since_first.tolist()
        days = [since_first[b:e] for b, e in spans]
        starts = start_day[pstart].astype("datetime64[D]").astype(object).tolist()  # datetime.date
        stay = stays(rows, vstart, start_day, [Path(p) for p in end_paths or [source]], end_column)
        if stay is not None:
            stay = stay.tolist()
            los = [stay[b:e] for b, e in spans]
    return [
        Patient(id=str(i), age=a, sex=s, visits=visits[b:e], visit_days=d, los_days=ls, start_date=st)
        for i, a, s, (b, e), d, ls, st in zip(ids, ages, sexes, spans, days, los, starts)
    ]
