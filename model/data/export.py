"""Exports of generated patients: JSONL, long-format CSV, and MIMIC-III- and MIMIC-IV-style zips.

The one export implementation: `promptehr generate` writes a file with `write_export`, and the API's
GET /cohorts/{id}/export streams `export_bytes` over HTTP while it reads the cohort from the store a
page at a time (service/export.py), so the same patients give the same bytes either way. Every
writer streams: patients come in as any iterable, output goes out every `rows` rows (`*_chunks`
generators yield str/bytes), so memory holds about one chunk, never the cohort.

Every code keeps its system (model/codes.py), in the form each format's reader expects; each format
reads back to the same patients through the project's loaders (tests/test_export.py,
tests/test_icd10_export.py). `code_systems` is what the cohort may hold (the model's vocabulary,
Vocabulary.code_systems): a streamed header cannot wait for the last patient.
- JSONL: one {"patient_id", "age", "sex", "visits"[, "visit_days", "los_days"]} per line
  (Patient.to_dict): codes as the model writes them, ICD-9-CM bare ("4019"), ICD-10-CM prefixed
  ("icd10:I10"); visit_days (days from the first visit's start, first 0) and los_days (one stay per
  visit, 0 = same day) where the record has time.
- long CSV: patient_id, visit_id, visit_time[, visit_end], code, age, sex (what
  model/data/long_format.py reads). When the cohort may hold ICD-10-CM codes a code_system column
  follows code (icd9 | icd10) and code is bare ("I10"), as `promptehr data convert` writes it; an
  ICD-9-CM-only cohort has no such column (its bytes are those of the exports before ICD-10-CM).
- mimic3 zip: PATIENTS.csv, ADMISSIONS.csv, DIAGNOSES_ICD.csv at the root, upper-case headers,
  synthetic integer ids (SUBJECT_ID = position in the export from 1, HADM_ID from 100001).
  ICD9_CODE holds ICD-9-CM codes only: a cohort that may hold ICD-10-CM codes is refused.
- mimic4 zip: patients.csv, admissions.csv, diagnoses_icd.csv at the root (model/data/mimic4.py
  reads the folder), lower-case headers, subject_id 10000000 + position, hadm_id from 20000001;
  diagnoses_icd has seq_num, icd_code (bare) and icd_version (9 or 10) per row. patients has
  anchor_age = the age and anchor_year = the first admission's year, so the loader's anchor_age +
  (admission year - anchor_year) is the age again.

Dates (the CSV's visit_time and the zips' admittime/dischtime) come one of two ways, the same for a
whole export (`peek_dates` decides from the first patient; a later patient of the other kind is a
ValueError naming it, since a streamed header cannot be taken back):
- learned (the records have time: a model that learned visit times, Patient.visit_days/los_days):
  visit k is admitted at start_date + visit_days[k] days, 08:00, and discharged los_days[k] days
  after its admission date at 12:00 (so a same-day stay ends after it starts). The model learns
  times relative to a record's first visit, not where records fall in the calendar, so every
  record's first visit is on `start_date` (DEFAULT_START_DATE, 2020-01-01, unless the caller gives
  one: `promptehr generate --start-date`, the API's `start_date`; years 1900-2999, check_start_date),
  a real record's own Patient.start_date included; the output stays reproducible.
  The long CSV then gains a visit_end column after visit_time, both ISO datetimes
  (2020-01-01T08:00:00). The days read back through the loaders as the JSONL's.
- invented (records without time: a model that did not learn them): byte for byte the exports
  before time, dates from a hash of the patient id: the first admission falls in 2010-2019, later
  ones 7-400 days after the previous discharge, stays last 1-10 days; the CSV's visit_time is a
  date and there is no visit_end column. start_date plays no part. The CLI warns, and the API says
  so in a header (service/routes/cohorts.py).
MIMIC-III's DOB is the first admission's date `age` years earlier (birthday arithmetic, as its
loader computes age); MIMIC-IV's anchor_year is the first admission's year.

The diagnoses table streams straight into the zip; the patients and admissions tables (small) are
spooled to temporary files and appended after it, so one pass over the patients is enough.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from promptehr.model.archive import Pipe
from promptehr.model.codes import NAMES, bare, system_of
from promptehr.model.patient import Patient

FORMATS = ("jsonl", "csv", "mimic3", "mimic4")
LONG_COLUMNS = ["patient_id", "visit_id", "visit_time", "code", "age", "sex"]
LONG_COLUMNS_WITH_SYSTEM = ["patient_id", "visit_id", "visit_time", "code", "code_system", "age", "sex"]
CHUNK_ROWS = 2000  # rows per yielded chunk
ICD9_ONLY = ("icd9",)  # the code systems of a cohort by default: an ICD-9-CM model's
DEFAULT_START_DATE = dt.date(2020, 1, 1)  # the first visit of every record with time (the module docstring)
START_YEARS = (1900, 2999)  # a start date's years: room for a DOB 90 years before it and decades of visits after
ADMIT_TIME, DISCHARGE_TIME = dt.time(8), dt.time(12)  # a same-day stay (los 0) still ends after it starts
LEARNED, INVENTED = "learned", "invented"  # where an export's dates come from (peek_dates)


def check_exportable(format: str, code_systems: Iterable[str] = ICD9_ONLY) -> None:
    """ValueError (one line) when `format` cannot hold a cohort of `code_systems`; call it before
    generating or streaming, so that the refusal comes before any work or byte."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: expected one of {', '.join(FORMATS)}")
    if format == "mimic3" and set(code_systems) - {"icd9"}:
        raise ValueError("a MIMIC-III zip holds ICD-9-CM codes only (ICD9_CODE), and this model's cohorts may hold "
                         "ICD-10-CM codes: export as mimic4 (icd_version per row), csv or jsonl")


def check_start_date(start_date: dt.date) -> None:
    """ValueError (one line) unless `start_date` is a date whose exports every format can write
    (TypeError where it is no datetime.date at all)."""
    if not isinstance(start_date, dt.date) or isinstance(start_date, dt.datetime):
        raise TypeError(f"start date: expected a date (YYYY-MM-DD), got {start_date!r}")
    if not START_YEARS[0] <= start_date.year <= START_YEARS[1]:
        raise ValueError(f"start date {start_date.isoformat()}: expected a date in the years {START_YEARS[0]} to "
                         f"{START_YEARS[1]} (birth dates fall up to 90 years before it, visits after it)")


def dates_of(p: Patient) -> str:
    """LEARNED where the record has time (its dates come from it), else INVENTED (a hash of its id)."""
    return LEARNED if p.has_time else INVENTED


def peek_dates(patients: Iterable[Patient]) -> tuple[str, Iterator[Patient]]:
    """(LEARNED | INVENTED, the same patients): decided by the first patient, because a streamed header
    (the CSV's columns, the API's PromptEHR-Dates) cannot wait for the rest. The patients that follow
    are checked as they pass: one of the other kind is a ValueError naming it. No patients: INVENTED
    (the export holds no dates at all)."""
    it = iter(patients)
    first = next(it, None)
    if first is None:
        return INVENTED, iter(())
    return dates_of(first), _same_dates(first, it)


def _same_dates(first: Patient, rest: Iterator[Patient]) -> Iterator[Patient]:
    yield first
    kind = dates_of(first)
    for p in rest:
        if dates_of(p) != kind:
            has = {LEARNED: "has visit times (visit_days)", INVENTED: "has no visit times (visit_days)"}
            raise ValueError(f"patient {p.id!r} {has[dates_of(p)]} but the export's first patient {first.id!r} "
                             f"{has[kind]}: expected every patient of an export to have times, or none")
        yield p


def _icd9(code: str, table: str) -> str:
    """The code, refused if it is not ICD-9-CM: the streamed output has no place for its system."""
    if system_of(code) != "icd9":
        raise ValueError(f"{NAMES[system_of(code)]} code {bare(code)} in an export whose {table} holds ICD-9-CM "
                         f"codes only: give the export the cohort's code systems (check_exportable)")
    return code


def jsonl_chunks(patients: Iterable[Patient], rows: int = CHUNK_ROWS) -> Iterator[str]:
    buf: list[str] = []
    _, patients = peek_dates(patients)  # records with and without time do not mix, as in the other formats
    for p in patients:
        buf.append(json.dumps(p.to_dict(), separators=(",", ":")) + "\n")
        if len(buf) >= rows:
            yield "".join(buf)
            buf.clear()
    if buf:
        yield "".join(buf)


def _visit_dates(p: Patient, start_date: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
    """(admit, discharge) per visit: the record's own days from `start_date` where it has time, else
    invented from its id (the module docstring)."""
    return _learned_dates(p, start_date) if p.has_time else _invented_dates(p)


def _learned_dates(p: Patient, start_date: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
    if p.los_days is None:
        raise ValueError(f"patient {p.id!r} has visit_days but no los_days: expected both (a stay per visit) "
                         f"to place its discharges")
    out = []
    try:
        for days, los in zip(p.visit_days, p.los_days):
            admit = start_date + dt.timedelta(days=days)
            out.append((dt.datetime.combine(admit, ADMIT_TIME),
                        dt.datetime.combine(admit + dt.timedelta(days=los), DISCHARGE_TIME)))
    except OverflowError:
        raise ValueError(f"patient {p.id!r}: its visits, up to {p.visit_days[-1]} days after the first, placed from "
                         f"the start date {start_date.isoformat()} pass the year 9999: expected an earlier start "
                         f"date") from None
    return out


def _invented_dates(p: Patient) -> list[tuple[dt.datetime, dt.datetime]]:
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


def long_columns(with_system: bool, learned: bool) -> list[str]:
    """The long CSV's header: code_system for a cohort that may hold ICD-10-CM, visit_end for one with time."""
    columns = list(LONG_COLUMNS_WITH_SYSTEM if with_system else LONG_COLUMNS)
    if learned:
        columns.insert(columns.index("visit_time") + 1, "visit_end")
    return columns


def _visit_times(admit: dt.datetime, discharge: dt.datetime, learned: bool) -> list[str]:
    # Invented dates keep the exports' old form, a date and no end (the same bytes as before time).
    return [admit.isoformat(), discharge.isoformat()] if learned else [admit.date().isoformat()]


def csv_chunks(patients: Iterable[Patient], rows: int = CHUNK_ROWS, code_systems: Iterable[str] = ICD9_ONLY,
               start_date: dt.date = DEFAULT_START_DATE) -> Iterator[str]:
    with_system = bool(set(code_systems) - {"icd9"})  # the code_system column (see the module docstring)
    kind, patients = peek_dates(patients)
    learned = kind == LEARNED
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(long_columns(with_system, learned))
    n = 0
    for p in patients:
        age = _age_text(p.age)
        for k, (visit, (admit, discharge)) in enumerate(zip(p.visits, _visit_dates(p, start_date))):
            vid = f"{p.id}-{k + 1:03d}"
            times = _visit_times(admit, discharge, learned)
            for code in visit:
                if with_system:
                    w.writerow([p.id, vid, *times, bare(code), system_of(code), age, p.sex])
                else:
                    w.writerow([p.id, vid, *times, _icd9(code, "code column"), age, p.sex])
                n += 1
        if n >= rows:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            n = 0
    if out.tell():
        yield out.getvalue()


def _fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class ZipLayout:
    """A MIMIC-style zip: its three tables' file names and headers, the first ids, and one row of each
    table (patient: subject, patient, first admission; admission: subject, hadm_id, admit, discharge;
    diagnosis: diagnosis row number, subject, hadm_id, seq_num, code)."""

    names: tuple[str, str, str]  # diagnoses, patients, admissions
    columns: tuple[list[str], list[str], list[str]]
    first_subject: int
    first_hadm: int
    patient_row: Callable[[int, Patient, dt.datetime], list]
    admission_row: Callable[[int, int, dt.datetime, dt.datetime], list]
    diagnosis_row: Callable[[int, int, int, int, str], list]


MIMIC3 = ZipLayout(
    names=("DIAGNOSES_ICD.csv", "PATIENTS.csv", "ADMISSIONS.csv"),
    columns=(["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
             ["ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"],
             ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE",
              "ADMISSION_LOCATION", "DISCHARGE_LOCATION", "HOSPITAL_EXPIRE_FLAG"]),
    first_subject=1, first_hadm=100001,
    patient_row=lambda subject, p, first: [subject, subject, p.sex, _fmt(_dob(first, p.age)), "", "", "", 0],
    admission_row=lambda subject, hadm, admit, disch: [hadm - 100000, subject, hadm, _fmt(admit), _fmt(disch), "",
                                                       "EMERGENCY", "EMERGENCY ROOM ADMIT", "HOME", 0],
    diagnosis_row=lambda row, subject, hadm, seq, code: [row, subject, hadm, seq, _icd9(code, "ICD9_CODE")],
)


def _anchor_year_group(year: int) -> str:
    start = 2008 + 3 * ((year - 2008) // 3)  # MIMIC-IV's groups: 2008 - 2010, 2011 - 2013, ...
    return f"{start} - {start + 2}"


MIMIC4 = ZipLayout(
    names=("diagnoses_icd.csv", "patients.csv", "admissions.csv"),
    columns=(["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
             ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
             ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
              "admission_location", "discharge_location", "hospital_expire_flag"]),
    first_subject=10000001, first_hadm=20000001,
    patient_row=lambda subject, p, first: [subject, p.sex, int(p.age), first.year, _anchor_year_group(first.year), ""],
    admission_row=lambda subject, hadm, admit, disch: [subject, hadm, _fmt(admit), _fmt(disch), "", "EW EMER.",
                                                       "EMERGENCY ROOM", "HOME", 0],
    diagnosis_row=lambda row, subject, hadm, seq, code: [subject, hadm, seq, bare(code),
                                                         10 if system_of(code) == "icd10" else 9],
)


def zip_chunks(patients: Iterable[Patient], layout: ZipLayout, rows: int = CHUNK_ROWS,
               start_date: dt.date = DEFAULT_START_DATE) -> Iterator[bytes]:
    sink = Pipe()
    _, patients = peek_dates(patients)
    with tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", newline="") as pat_f, \
            tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", newline="") as adm_f:
        pw, aw = csv.writer(pat_f, lineterminator="\n"), csv.writer(adm_f, lineterminator="\n")
        pw.writerow(layout.columns[1])
        aw.writerow(layout.columns[2])
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            with zf.open(layout.names[0], "w") as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                dw = csv.writer(text, lineterminator="\n")
                dw.writerow(layout.columns[0])
                hadm = layout.first_hadm - 1
                diag_row = n = 0
                for subject, p in enumerate(patients, start=layout.first_subject):
                    dates = _visit_dates(p, start_date)
                    # a record without visits still needs a DOB / anchor year: its dates' origin
                    first = dates[0][0] if dates else (dt.datetime.combine(start_date, ADMIT_TIME) if p.has_time
                                                       else dt.datetime(2010, 1, 1, 8))
                    pw.writerow(layout.patient_row(subject, p, first))
                    for visit, (admit, disch) in zip(p.visits, dates):
                        hadm += 1
                        aw.writerow(layout.admission_row(subject, hadm, admit, disch))
                        for seq, code in enumerate(visit, start=1):
                            diag_row += 1
                            dw.writerow(layout.diagnosis_row(diag_row, subject, hadm, seq, code))
                            n += 1
                    if n >= rows:
                        text.flush()
                        yield sink.drain()
                        n = 0
                text.flush()
                text.detach()
            yield sink.drain()
            for name, f in zip(layout.names[1:], (pat_f, adm_f)):
                f.seek(0)
                with zf.open(name, "w") as raw:
                    while block := f.read(1 << 20):
                        raw.write(block.encode("utf-8"))
                        yield sink.drain()
        yield sink.drain()


def export_chunks(patients: Iterable[Patient], format: str, rows: int = CHUNK_ROWS,
                  code_systems: Iterable[str] = ICD9_ONLY,
                  start_date: dt.date | None = None) -> Iterator[str | bytes]:
    """The export's chunks; `code_systems`: those the cohort may hold (refused here, before any chunk,
    where the format cannot hold them: check_exportable); `start_date`: the first visit's date of
    records with time (None: DEFAULT_START_DATE; refused here too: check_start_date)."""
    code_systems = tuple(code_systems)
    check_exportable(format, code_systems)
    start_date = DEFAULT_START_DATE if start_date is None else start_date
    check_start_date(start_date)
    if format == "jsonl":
        return jsonl_chunks(patients, rows)
    if format == "csv":
        return csv_chunks(patients, rows, code_systems, start_date)
    return zip_chunks(patients, MIMIC3 if format == "mimic3" else MIMIC4, rows, start_date)


def export_bytes(patients: Iterable[Patient], format: str, rows: int = CHUNK_ROWS,
                 code_systems: Iterable[str] = ICD9_ONLY, start_date: dt.date | None = None) -> Iterator[bytes]:
    """The export as non-empty byte chunks. Where the chunks break (`rows`) never changes the bytes.
    A refusal (check_exportable, check_start_date) is raised by this call, not by the first chunk."""
    chunks = export_chunks(patients, format, rows, code_systems, start_date)
    return (b for b in (c.encode("utf-8") if isinstance(c, str) else c for c in chunks) if b)


def write_export(patients: Iterable[Patient], out: str | Path | BinaryIO, format: str,
                 code_systems: Iterable[str] = ICD9_ONLY, start_date: dt.date | None = None) -> int:
    """Write an export to a path or binary file object; returns bytes written."""
    chunks = export_bytes(patients, format, code_systems=code_systems, start_date=start_date)
    if isinstance(out, (str, Path)):
        with open(out, "wb") as f:
            return _write_all(chunks, f)
    return _write_all(chunks, out)


def _write_all(chunks: Iterator[bytes], f: BinaryIO) -> int:
    n = 0
    for b in chunks:
        f.write(b)
        n += len(b)
    return n
