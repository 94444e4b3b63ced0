"""The steps every format shares: diagnosis rows in a common long shape -> ordered, de-duplicated visits
-> list[Patient].

The common shape is one row per diagnosis: `patient_id`, `visit_id` (strings), `time` (datetime64 or
float; the visit's time), `seq` (float, the code's position in its visit; NaN sorts last) and `code`.
All of it is vectorised: the only Python loops run over visits and patients, never over rows.
"""
from __future__ import annotations

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


def to_patients(rows: pd.DataFrame, age: pd.Series, sex: pd.Series, source: str | Path) -> list[Patient]:
    """Build Patients from the output of order_rows; `age` and `sex` are indexed by patient id."""
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
    return [
        Patient(id=str(i), age=a, sex=s, visits=visits[b:e])
        for i, a, s, b, e in zip(ids, ages, sexes, pstart.tolist(), pend.tolist())
    ]
