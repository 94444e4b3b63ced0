"""Which format a path holds, from the files present (and, for MIMIC, one header)."""
from __future__ import annotations

from pathlib import Path

from promptehr.model.data.desynpuf import sample_folders
from promptehr.model.data.long_format import long_files
from promptehr.model.data.mimic4 import hosp_folder
from promptehr.model.data.reading import find_table, is_table, read_header
from promptehr.model.errors import DataError

FORMATS = ("mimic3", "mimic4", "desynpuf", "long")
MIMIC_TABLES = ("patients", "admissions", "diagnoses_icd")


def _mimic_flavour(folder: Path) -> str | None:
    try:
        tables = [find_table(folder, n) for n in MIMIC_TABLES]
    except DataError:
        return None
    # File names do not tell the versions apart reliably (people rename them); the patients header does.
    columns = {c.strip().lower() for c in read_header(tables[0])}
    if "anchor_age" in columns:
        return "mimic4"
    if "dob" in columns:
        return "mimic3"
    return None


def _is_long(path: Path) -> bool:
    files = long_files(path)
    if not files:
        return False
    if files[0].name.lower().endswith(".parquet"):
        return True  # its schema is checked by the loader, with a precise error
    return {"patient_id", "visit_id", "code"} <= {c.strip().lower() for c in read_header(files[0])}


def detect_format(path: str | Path) -> str:
    """"mimic3" | "mimic4" | "desynpuf" | "long", or a DataError saying what was looked for."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if path.is_file():
        if is_table(path):
            return "long"
        raise DataError(path, "unknown file type: expected a long-format .csv, .csv.gz or .parquet file, or a data folder")
    flavour = _mimic_flavour(path) or _mimic_flavour(hosp_folder(path))
    if flavour:
        return flavour
    if sample_folders(path):
        return "desynpuf"
    if _is_long(path):
        return "long"
    raise DataError(
        path,
        "cannot tell the format: expected a MIMIC-III folder (PATIENTS, ADMISSIONS, DIAGNOSES_ICD), a MIMIC-IV "
        "folder (hosp/patients, admissions, diagnoses_icd), a DE-SynPUF folder (beneficiary summary + inpatient "
        "claims) or long-format files (patient_id, visit_id, visit_time, code)",
    )
