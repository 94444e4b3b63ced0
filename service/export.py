"""A cohort's export over HTTP: its patients read from the store a page at a time and written by
model/data/export.py, the one implementation (`promptehr generate` writes files with it too), so the
API and the CLI give the same bytes for the same patients. Memory holds about one page.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy.orm import Session

from model.patient import Patient
from service import store

# format -> (media type, file extension)
FORMATS = {
    "jsonl": ("application/x-ndjson", "jsonl"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "mimic3": ("application/zip", "zip"),
    "mimic4": ("application/zip", "zip"),
}


def cohort_patients(session: Session, cohort_id: str, page: int) -> Iterator[Patient]:
    """The cohort's patients in index order, read `page` rows at a time."""
    for rows in store.iter_patients(session, cohort_id, chunk=page):
        for row in rows:
            yield Patient.from_dict(row.patient)


def stream(fmt: str, session: Session, cohort_id: str, page: int = 500,
           code_systems: Iterable[str] = ("icd9",)) -> Iterator[bytes]:
    """The export's bytes, a chunk about every `page` rows; `code_systems`: those of the cohort's model.
    ValueError, from this call and before any byte, where `fmt` cannot hold them (a MIMIC-III zip of
    ICD-10-CM codes)."""
    # Imported here: model.data's package imports pandas (about 0.8 s of the app's 3.3 s start-up,
    # measured), which no other route needs at start-up either (routes/datasets.py waits the same way).
    from model.data.export import export_bytes

    return export_bytes(cohort_patients(session, cohort_id, page), fmt, rows=page, code_systems=code_systems)
