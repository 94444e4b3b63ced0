"""Exports of generated patients: JSONL, long-format CSV, and a MIMIC-III-style zip.

The one export implementation: `promptehr generate` writes a file with `write_export`, and the API's
GET /cohorts/{id}/export streams `export_bytes` over HTTP while it reads the cohort from the store a
page at a time (service/export.py), so the same patients give the same bytes either way. Every
writer streams: patients come in as any iterable, output goes out every `rows` rows (`*_chunks`
generators yield str/bytes), so memory holds about one chunk, never the cohort.

- JSONL: one {"patient_id", "age", "sex", "visits"} per line (Patient.to_dict).
- long CSV: patient_id, visit_id, visit_time, code, age, sex (what model/data/long_format.py reads).
- mimic3 zip: PATIENTS.csv, ADMISSIONS.csv, DIAGNOSES_ICD.csv at the root, upper-case headers,
  synthetic integer ids (SUBJECT_ID = position in the export from 1, HADM_ID from 100001). Dates are
  plausible and deterministic per patient id: the first admission falls in 2010-2019, later ones
  7-400 days after the previous discharge, stays last 1-10 days, and DOB is the first admission's
  date `age` years earlier (birthday arithmetic, as the MIMIC-III loader computes age).
  DIAGNOSES_ICD streams straight into the zip; PATIENTS and ADMISSIONS (small) are spooled to
  temporary files and appended after it, so one pass over the patients is enough.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from model.patient import Patient

FORMATS = ("jsonl", "csv", "mimic3")
LONG_COLUMNS = ["patient_id", "visit_id", "visit_time", "code", "age", "sex"]
CHUNK_ROWS = 2000  # rows per yielded chunk


def jsonl_chunks(patients: Iterable[Patient], rows: int = CHUNK_ROWS) -> Iterator[str]:
    buf: list[str] = []
    for p in patients:
        buf.append(json.dumps(p.to_dict(), separators=(",", ":")) + "\n")
        if len(buf) >= rows:
            yield "".join(buf)
            buf.clear()
    if buf:
        yield "".join(buf)


def _visit_dates(p: Patient) -> list[tuple[dt.datetime, dt.datetime]]:
    """(admit, discharge) per visit, from a hash of the patient id: the same for every export."""
    h = hashlib.blake2b(p.id.encode(), digest_size=32).digest()
    draws = [int.from_bytes(h[i:i + 2], "little") for i in range(0, 32, 2)]  # 16 numbers in [0, 65536)

    def draw(k: int) -> int:
        # more than 16 visits reuse the stream with an offset; still deterministic
        return (draws[k % 16] + 7919 * (k // 16)) % 65536

    admit = dt.datetime(2010, 1, 1, 8) + dt.timedelta(days=draw(0) % 3650, hours=draw(1) % 12)
    out = []
    for k in range(len(p.visits)):
        stay = dt.timedelta(days=1 + draw(2 + 2 * k) % 10, hours=draw(3 + 2 * k) % 8)
        out.append((admit, admit + stay))
        admit = admit + stay + dt.timedelta(days=7 + draw(4 + 2 * k) % 394)
    return out


def _dob(first_admit: dt.datetime, age: float) -> dt.datetime:
    # same month and a day no later than the admission's: completed years == age exactly
    day = min(first_admit.day, 28)
    return dt.datetime(first_admit.year - int(age), first_admit.month, day)


def _age_text(age: float) -> str:
    return str(int(age)) if float(age).is_integer() else repr(float(age))


def csv_chunks(patients: Iterable[Patient], rows: int = CHUNK_ROWS) -> Iterator[str]:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(LONG_COLUMNS)
    n = 0
    for p in patients:
        age = _age_text(p.age)
        for k, (visit, (admit, _)) in enumerate(zip(p.visits, _visit_dates(p))):
            vid = f"{p.id}-{k + 1:03d}"
            day = admit.date().isoformat()
            for code in visit:
                w.writerow([p.id, vid, day, code, age, p.sex])
                n += 1
        if n >= rows:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            n = 0
    if out.tell():
        yield out.getvalue()


class _Pipe(io.RawIOBase):
    """A write-only, unseekable sink whose bytes the generator drains (zipfile then writes data descriptors)."""

    def __init__(self):
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def drain(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


PATIENTS_COLUMNS = ["ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"]
ADMISSIONS_COLUMNS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE",
                      "ADMISSION_LOCATION", "DISCHARGE_LOCATION", "HOSPITAL_EXPIRE_FLAG"]
DIAGNOSES_COLUMNS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"]


def mimic3_zip_chunks(patients: Iterable[Patient], rows: int = CHUNK_ROWS) -> Iterator[bytes]:
    sink = _Pipe()
    with tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", newline="") as pat_f, \
            tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", newline="") as adm_f:
        pw, aw = csv.writer(pat_f, lineterminator="\n"), csv.writer(adm_f, lineterminator="\n")
        pw.writerow(PATIENTS_COLUMNS)
        aw.writerow(ADMISSIONS_COLUMNS)
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            with zf.open("DIAGNOSES_ICD.csv", "w") as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                dw = csv.writer(text, lineterminator="\n")
                dw.writerow(DIAGNOSES_COLUMNS)
                hadm = 100000
                diag_row = n = 0
                for subject, p in enumerate(patients, start=1):
                    dates = _visit_dates(p)
                    first = dates[0][0] if dates else dt.datetime(2010, 1, 1, 8)
                    pw.writerow([subject, subject, p.sex, _fmt(_dob(first, p.age)), "", "", "", 0])
                    for visit, (admit, disch) in zip(p.visits, dates):
                        hadm += 1
                        aw.writerow([hadm - 100000, subject, hadm, _fmt(admit), _fmt(disch), "", "EMERGENCY",
                                     "EMERGENCY ROOM ADMIT", "HOME", 0])
                        for seq, code in enumerate(visit, start=1):
                            diag_row += 1
                            dw.writerow([diag_row, subject, hadm, seq, code])
                            n += 1
                    if n >= rows:
                        text.flush()
                        yield sink.drain()
                        n = 0
                text.flush()
                text.detach()
            yield sink.drain()
            for name, f in (("PATIENTS.csv", pat_f), ("ADMISSIONS.csv", adm_f)):
                f.seek(0)
                with zf.open(name, "w") as raw:
                    while block := f.read(1 << 20):
                        raw.write(block.encode("utf-8"))
                        yield sink.drain()
        yield sink.drain()


def export_chunks(patients: Iterable[Patient], format: str, rows: int = CHUNK_ROWS) -> Iterator[str | bytes]:
    if format == "jsonl":
        return jsonl_chunks(patients, rows)
    if format == "csv":
        return csv_chunks(patients, rows)
    if format == "mimic3":
        return mimic3_zip_chunks(patients, rows)
    raise ValueError(f"unknown export format {format!r}: expected one of {', '.join(FORMATS)}")


def export_bytes(patients: Iterable[Patient], format: str, rows: int = CHUNK_ROWS) -> Iterator[bytes]:
    """The export as non-empty byte chunks. Where the chunks break (`rows`) never changes the bytes."""
    for c in export_chunks(patients, format, rows):
        b = c.encode("utf-8") if isinstance(c, str) else c
        if b:
            yield b


def write_export(patients: Iterable[Patient], out: str | Path | BinaryIO, format: str) -> int:
    """Write an export to a path or binary file object; returns bytes written."""
    if isinstance(out, (str, Path)):
        with open(out, "wb") as f:
            return _write_all(export_bytes(patients, format), f)
    return _write_all(export_bytes(patients, format), out)


def _write_all(chunks: Iterator[bytes], f: BinaryIO) -> int:
    n = 0
    for b in chunks:
        f.write(b)
        n += len(b)
    return n
