"""Cohort exports streamed from the database, a page of rows at a time (never the whole cohort).

- jsonl: one patient per line, {"index", "patient_id", "age", "sex", "visits"}.
- csv: the long format `patient_id,visit_id,visit_time,code,age,sex` (visit_time = visit number),
  which `promptehr data` reads back as format "long".
- mimic3: a zip of PATIENTS.csv, ADMISSIONS.csv and DIAGNOSES_ICD.csv with MIMIC-III's upper-case
  columns; dates are synthetic (first admission 2150-06-01, one visit every 90 days; DOB gives the
  patient's whole-year age at the first admission), which the MIMIC-III loader reads back.
"""
from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from service import store

FORMATS = {
    "jsonl": ("application/x-ndjson", "jsonl"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "mimic3": ("application/zip", "zip"),
}
FIRST_ADMISSION = datetime(2150, 6, 1, 8, 0, 0)
VISIT_GAP = timedelta(days=90)


def _pages(session: Session, cohort_id: str, chunk: int) -> Iterator[list[tuple[int, dict]]]:
    for rows in store.iter_patients(session, cohort_id, chunk=chunk):
        yield [(r.index, r.patient) for r in rows]


def jsonl(session: Session, cohort_id: str, chunk: int = 500) -> Iterator[bytes]:
    for page in _pages(session, cohort_id, chunk):
        yield "".join(json.dumps({"index": i, **p}, separators=(",", ":")) + "\n" for i, p in page).encode()


def _csv_text(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def long_csv(session: Session, cohort_id: str, chunk: int = 500) -> Iterator[bytes]:
    yield _csv_text([["patient_id", "visit_id", "visit_time", "code", "age", "sex"]]).encode()
    for page in _pages(session, cohort_id, chunk):
        rows = []
        for _, p in page:
            pid = p["patient_id"]
            for v, visit in enumerate(p["visits"]):
                for code in visit:
                    rows.append([pid, f"{pid}-{v}", v, code, p["age"], p["sex"]])
        yield _csv_text(rows).encode()


def _dt(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _dob(age: float) -> datetime:
    years = int(max(0.0, min(float(age), 90.0)))
    return FIRST_ADMISSION.replace(year=FIRST_ADMISSION.year - years, hour=0)


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream collecting what zipfile writes, drained after each chunk."""

    def __init__(self):
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._parts.append(bytes(b))
        return len(b)

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def mimic3_zip(session: Session, cohort_id: str, chunk: int = 500) -> Iterator[bytes]:
    sink = _Sink()
    zf = zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED)

    def member(name: str, header: list[str], rows_of) -> Iterator[bytes]:
        with zf.open(name, mode="w", force_zip64=True) as f:
            f.write(_csv_text([header]).encode())
            counter = {"row": 0, "hadm": 0}
            for page in _pages(session, cohort_id, chunk):
                rows: list[list] = []
                for index, p in page:
                    rows_of(index, p, rows, counter)
                f.write(_csv_text(rows).encode())
                yield sink.drain()
        yield sink.drain()

    def patients(index, p, rows, c):
        c["row"] += 1
        rows.append([c["row"], index + 1, p["sex"], _dt(_dob(p["age"])), "", "", "", 0])

    def admissions(index, p, rows, c):
        for v in range(len(p["visits"])):
            c["row"] += 1
            c["hadm"] += 1
            admit = FIRST_ADMISSION + v * VISIT_GAP
            rows.append([c["row"], index + 1, 100000 + c["hadm"], _dt(admit), _dt(admit + timedelta(days=3))])

    def diagnoses(index, p, rows, c):
        for visit in p["visits"]:
            c["hadm"] += 1
            for seq, code in enumerate(visit, start=1):
                c["row"] += 1
                rows.append([c["row"], index + 1, 100000 + c["hadm"], seq, code])

    yield from member(
        "PATIENTS.csv", ["ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"], patients
    )
    yield from member("ADMISSIONS.csv", ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME"], admissions)
    yield from member("DIAGNOSES_ICD.csv", ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"], diagnoses)
    zf.close()
    yield sink.drain()


def stream(fmt: str, session: Session, cohort_id: str, chunk: int = 500) -> Iterator[bytes]:
    gen = {"jsonl": jsonl, "csv": long_csv, "mimic3": mimic3_zip}[fmt](session, cohort_id, chunk)
    for part in gen:
        if part:
            yield part
