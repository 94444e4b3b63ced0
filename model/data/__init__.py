"""Loaders: every source becomes a list of Patient, sorted by patient id.

    patients = load_patients("../shared/data/mimic3-demo")            # format detected
    patients = load_patients(["a.parquet", "b.parquet"], format="long")
    patients = load_patients("../shared/data/mimic4-demo", code_system="icd9")  # its ICD-9 admissions only

Codes come out in the in-memory form of model/codes.py: ICD-9-CM bare, ICD-10-CM as "icd10:I10".
`code_system` is the system of codes the source leaves open (see model/data/systems.py).

Bad input raises model.errors.DataError naming the file (and line / column); nothing is half-loaded.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from promptehr.model.codes import parse_system
from promptehr.model.data.detect import FORMATS, detect_format
from promptehr.model.data.opening import ReadLimits, check_inside_root, read_limits
from promptehr.model.data.stats import dataset_stats
from promptehr.model.errors import DataError
from promptehr.model.patient import Patient

__all__ = ["FORMATS", "ReadLimits", "dataset_stats", "detect_format", "load_patients"]


def _loader(fmt: str):
    # Imported here so that asking for one format never fails on another's module.
    if fmt == "mimic3":
        from promptehr.model.data.mimic3 import load_mimic3 as load
    elif fmt == "mimic4":
        from promptehr.model.data.mimic4 import load_mimic4 as load
    elif fmt == "desynpuf":
        from promptehr.model.data.desynpuf import load_desynpuf as load
    elif fmt == "long":
        from promptehr.model.data.long_format import load_long as load
    else:
        raise DataError(None, f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return load


def load_patients(paths: str | Path | Sequence[str | Path], format: str | None = None,
                  code_system: str | None = None, limits: ReadLimits | None = None) -> list[Patient]:
    """Load one source or several (each detected on its own unless `format` is given) into one list.

    The same patient id in two sources is an error rather than a silent merge: the sources would
    disagree on the patient's demographics and visit order. `code_system`: "icd9" | "icd10" (also 9,
    10) for every source, or None: each source's own, or what its codes say. `limits`: the root every
    file must resolve inside and the size, decompression and time limits (model/data/opening.py);
    without them a file is still read only if it is a regular file.
    """
    if code_system is not None:
        try:
            code_system = parse_system(code_system)
        except ValueError as e:
            raise DataError(None, str(e)) from None
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DataError(None, "no input: expected at least one path")
    with read_limits(limits):
        patients = _load_all([Path(p) for p in paths], format, code_system, limits or ReadLimits())
    if len(paths) > 1:
        patients.sort(key=lambda p: p.id)
    return patients


def _load_all(paths: list[Path], format: str | None, code_system: str | None, limits: ReadLimits) -> list[Patient]:
    patients: list[Patient] = []
    origin: dict[str, Path] = {}
    for path in paths:
        if not path.exists():
            raise DataError(path, "no such file or folder")
        check_inside_root(path, limits.root)  # the files are checked again as each is opened
        for p in _loader(format or detect_format(path))(path, code_system=code_system):
            if p.id in origin:
                raise DataError(path, f"patient id {p.id!r} also in {origin[p.id]}: expected each patient in one source")
            origin[p.id] = path
            patients.append(p)
    return patients
