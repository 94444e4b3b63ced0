"""The code system of every diagnosis row, and the row's code in its in-memory form (model/codes.py).

A loader hands over its cleaned code column and what the source says about the system:
- one system for the whole source (MIMIC-III ICD9_CODE, DE-SynPUF ICD9_DGNS_CD_k: ICD-9-CM);
- one per row (MIMIC-IV icd_version, a long file's code_system column; see declared_systems);
- or nothing (a long file without the column). Then each file's codes decide: a code valid in one
  system only is evidence for it, and the file is read in the system its evidence names. A file
  with evidence for both is refused (it mixes systems: it needs the column); so is a file with no
  evidence at all, whose codes are all valid in both (E8809, V103: ICD-9-CM external causes and
  supplementary codes, ICD-10-CM metabolic disorders and transport accidents), naming the first.
  "Valid" is the shape of the system; an E or V code has both shapes, and then only the tables
  decide: the ICD-9-CM table of model/icd9.py, the ICD-10-CM release of model/icd10.py. An E/V code
  in neither table (or in both) is evidence for nothing.
A code may name its system itself ("icd10:I10", "icd9:4019"), as the project's own exports write it.

The user's `code_system` ("icd9" | "icd10", load_patients(code_system=...)) is the system of rows
the source leaves open; rows whose source names another system are dropped (MIMIC-IV with "icd9"
keeps its ICD-9 admissions only).

Then dots are removed where a dotted code has them ("401.9" -> "4019", "S72.001A" -> "S72001A"),
every code is checked against its system's shape (an error names file, line, column and value), and
ICD-10-CM codes get their prefix. All of it works on the distinct codes (pd.factorize): a million
rows cost one hash pass and a few array look-ups, no Python loop over rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from promptehr.model import codes as codesys
from promptehr.model import icd9, icd10
from promptehr.model.data.reading import fail
from promptehr.model.errors import DataError

UNDECLARED = -1  # row systems are indices into codesys.SYSTEMS: 0 ICD-9-CM, 1 ICD-10-CM
ICD9, ICD10 = codesys.SYSTEMS.index("icd9"), codesys.SYSTEMS.index("icd10")
# One dot right after the category: 401.9, V58.61, E880.9 (ICD-9-CM E codes: 4 characters), E11.9,
# S72.001A. Anywhere else the dot stays and the code is refused: "4019.0" is a code a float column
# mangled, and reading it as 40190 would invent another code.
DOTTED = r"^(E[0-9]{3}|[0-9A-Z]{3})\.([0-9A-Z]{1,4})$"
BAD_CODE = {s: f"not an {codesys.NAMES[s]} diagnosis code: expected an undotted or dotted code such as "
               f"{codesys.EXAMPLES[s]} ({shape})" for s, shape in (
                   ("icd9", "3-5 digits, V + 2-4 digits or E + 3-4 digits"),
                   ("icd10", "a letter, a digit, a letter or digit, then up to 4 letters or digits"))}
BAD_EITHER = ("not an ICD-9-CM or ICD-10-CM diagnosis code: expected a code such as 4019, V5861 (ICD-9-CM) "
              "or I10, E119 (ICD-10-CM), undotted or dotted")
ADD_COLUMN = ("add a code_system column (icd9 or icd10) or give the data set's system (--code-system on the CLI, "
              "code_system in POST /datasets)")


def declared_systems(paths: list[Path], df: pd.DataFrame, column: str, expected: str) -> np.ndarray:
    """(rows,) int8 system of each row from a column of system names (icd9, icd10, 9, 10 ...).

    An unknown name is an error naming its file, line and column; so is an empty one on a row that
    has a code. Parsed once per distinct value.
    """
    s = df[column]
    if not pd.api.types.is_string_dtype(s):  # Parquet integers 9 / 10
        s = s.astype("str").where(s.notna())
    idx, names = pd.factorize(s)
    parsed = np.empty(len(names), dtype=np.int8)
    for k, name in enumerate(names):
        try:
            parsed[k] = codesys.SYSTEMS.index(codesys.parse_system(name))
        except ValueError:
            fail(paths, df, idx == k, f"unknown code system: expected {expected}", column=column)
    empty = (idx < 0) & df["code"].notna().to_numpy()
    if empty.any():
        fail(paths, df, empty, f"empty code system: expected {expected}", column=column)
    return np.where(idx < 0, UNDECLARED, parsed[idx]).astype(np.int8)


def _prefixes(paths, rows, idx, raw: np.ndarray, name) -> tuple[np.ndarray, np.ndarray]:
    """(system of each distinct code named by its own prefix, or UNDECLARED; the codes without it)."""
    named = np.full(len(raw), UNDECLARED, dtype=np.int8)
    has = pd.Series(raw, dtype=object).str.contains(":", regex=False).to_numpy(dtype=bool)
    bare = raw.copy()
    for k in np.flatnonzero(has):  # distinct prefixed codes only
        head, _, tail = raw[k].partition(":")
        try:
            named[k] = codesys.SYSTEMS.index(codesys.parse_system(head))
        except ValueError:
            fail(paths, rows, idx == k, "unknown code system prefix: expected icd9: or icd10: before the code", column="code", name=name)
        bare[k] = tail
    return named, bare


def _undot(bare: np.ndarray) -> np.ndarray:
    s = pd.Series(bare, dtype=object)
    dotted = s.str.contains(".", regex=False).to_numpy(dtype=bool)
    if dotted.any():
        bare = bare.copy()
        bare[dotted] = s[dotted].str.replace(DOTTED, r"\1\2", regex=True).to_numpy(dtype=object)
    return bare


def _shapes(bare: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = pd.Series(bare, dtype=object)
    return (s.str.fullmatch(icd9.CODE_PATTERN, na=False).to_numpy(dtype=bool),
            s.str.fullmatch(icd10.CODE_PATTERN, na=False).to_numpy(dtype=bool))


def _evidence(bare: np.ndarray, shape9: np.ndarray, shape10: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct code: is it evidence for ICD-9-CM, for ICD-10-CM (see the module docstring)?"""
    both = shape9 & shape10
    known9, known10 = np.zeros(len(bare), dtype=bool), np.zeros(len(bare), dtype=bool)
    for k in np.flatnonzero(both):  # E and V codes: a few hundred distinct ones at most
        known9[k], known10[k] = icd9.is_known(bare[k]), icd10.is_known(bare[k])
    return shape9 & (~shape10 | (known9 & ~known10)), shape10 & (~shape9 | (known10 & ~known9))


def _first_in_file(rows: pd.DataFrame, mask: np.ndarray, n_files: int) -> np.ndarray:
    """(n_files,) position of the first row of each file where mask holds; -1 where none."""
    pos = np.flatnonzero(mask)
    first = np.full(n_files, -1, dtype=np.int64)
    files = rows["_file"].to_numpy()[pos]
    first[files[::-1]] = pos[::-1]  # reversed: the earliest position is written last
    return first


def _detect(paths, rows, idx, bare, shape9, shape10, open_rows: np.ndarray, name) -> np.ndarray:
    """The system of each open row: its file's, decided by the file's codes (module docstring)."""
    rows_neither = open_rows & np.append(~shape9 & ~shape10, False)[idx]  # index -1 (no code): False
    if rows_neither.any():
        fail(paths, rows, rows_neither, BAD_EITHER, column="code", name=name)
    ev9, ev10 = _evidence(bare, shape9, shape10)
    files = rows["_file"].to_numpy()
    n_files = int(files.max()) + 1
    first9 = _first_in_file(rows, open_rows & np.append(ev9, False)[idx], n_files)
    first10 = _first_in_file(rows, open_rows & np.append(ev10, False)[idx], n_files)
    mixed = np.flatnonzero((first9 >= 0) & (first10 >= 0))
    if len(mixed):
        p9, p10 = int(first9[mixed[0]]), int(first10[mixed[0]])
        (earlier, system), later = ((p9, "icd9"), p10) if p9 < p10 else ((p10, "icd10"), p9)
        seen = f"line {int(rows['_line'].iat[earlier])} has the {codesys.NAMES[system]} code {rows['code'].iat[earlier]!r}"
        fail(paths, rows, np.arange(len(rows)) == later, f"codes of both systems in one file ({seen}; this code is of the "
             f"other system only): expected one system per file; {ADD_COLUMN}", column="code", name=name)
    undecided = open_rows & (first9 < 0)[files] & (first10 < 0)[files]
    if undecided.any():
        fail(paths, rows, undecided, f"ambiguous code: valid in both ICD-9-CM and ICD-10-CM, and no other code in the "
             f"file tells which: {ADD_COLUMN}", column="code", name=name)
    return np.where(first10 >= 0, ICD10, ICD9).astype(np.int8)[files]


def resolve_codes(paths: list[Path], rows: pd.DataFrame, declared: np.ndarray | str | None,
                  code_system: str | None = None, *, name=None) -> pd.DataFrame:
    """`rows` (with `code` cleaned by clean_codes, `_file`, `_line`) with `code` in its in-memory form.

    `declared`: the source's system for every row ("icd9"), per row (declared_systems), or None.
    `name`: the code column as the user knows it, or a function (rows, position) -> name (see reading.fail).
    """
    idx, raw = pd.factorize(rows["code"])
    raw = np.asarray(raw, dtype=object)
    if isinstance(declared, str):
        system = np.full(len(rows), codesys.SYSTEMS.index(declared), dtype=np.int8)
    else:
        system = np.full(len(rows), UNDECLARED, dtype=np.int8) if declared is None else declared.astype(np.int8)
    named, bare = _prefixes(paths, rows, idx, raw, name)
    named_rows = np.append(named, UNDECLARED)[idx]
    clash = (named_rows >= 0) & (system >= 0) & (named_rows != system)
    if clash.any():
        fail(paths, rows, clash, "the code's prefix names another system than its row: expected them to agree", column="code", name=name)
    system = np.where(named_rows >= 0, named_rows, system).astype(np.int8)
    if code_system is not None:
        rows, idx, system = _keep_system(rows, idx, system, codesys.SYSTEMS.index(code_system), paths)
    bare = _undot(bare)
    shape9, shape10 = _shapes(bare)
    open_rows = (system == UNDECLARED) & (idx >= 0)
    if open_rows.any():
        system = np.where(open_rows, _detect(paths, rows, idx, bare, shape9, shape10, open_rows, name), system)
    ok = np.stack([np.append(shape9, True), np.append(shape10, True)])  # (2, n_codes + 1): index -1 is "no code"
    bad = ~ok[np.maximum(system, 0), idx]
    if bad.any():
        fail(paths, rows, bad, BAD_CODE[codesys.SYSTEMS[int(system[np.flatnonzero(bad)[0]])]], column="code", name=name)
    return _qualified(rows, idx, raw, bare, system)


def _keep_system(rows, idx, system, wanted: int, paths):
    """Rows whose source leaves the system open or names `wanted`; an error if none of them has a code."""
    keep = (system == UNDECLARED) | (system == wanted)
    if not (keep & (idx >= 0)).any():
        found = ", ".join(codesys.NAMES[codesys.SYSTEMS[s]] for s in sorted(set(system[idx >= 0].tolist())))
        raise DataError(paths[0], f"no {codesys.NAMES[codesys.SYSTEMS[wanted]]} codes: the source's codes are {found or 'none'}")
    if keep.all():
        return rows, idx, np.full(len(rows), wanted, dtype=np.int8)
    return rows[keep], idx[keep], np.full(int(keep.sum()), wanted, dtype=np.int8)


def _qualified(rows: pd.DataFrame, idx: np.ndarray, raw: np.ndarray, bare: np.ndarray, system: np.ndarray) -> pd.DataFrame:
    if not (system == ICD10).any() and (bare == raw).all():
        return rows  # ICD-9-CM as given: the column stays the very same (and as cheap) as before
    n = len(bare)
    values = np.concatenate([bare, np.array([codesys.qualify(c, "icd10") for c in bare], dtype=object), [None]])
    pick = np.where(idx < 0, 2 * n, idx + n * (system == ICD10))  # (rows,) into values
    return rows.assign(code=pd.Series(values[pick], index=rows.index, dtype=object))
