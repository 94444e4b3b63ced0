"""CMS DE-SynPUF folder: beneficiary summary file(s) + inpatient claims; or a parent folder of samples.

- A visit is an inpatient claim (CLM_ID) at CLM_ADMSN_DT, or CLM_FROM_DT where that is empty; it
  ends at CLM_THRU_DT (optional column; its stay and the all-or-nothing rule are in assemble.py). A
  claim id listed twice stays one visit, from its earliest date to its latest end.
- Its codes are ICD9_DGNS_CD_1..10 in that order, empty slots skipped. They are ICD-9-CM: a dotted
  one is stored undotted, one that is not ICD-9-CM shaped is an error naming its file, line and slot
  column.
- ADMTNG_ICD9_DGNS_CD (the admitting diagnosis) is NOT included. It is a separate field, the reason
  for admission rather than a diagnosis of the stay, and the agreed counts decide it: sample 1 has
  2,806 distinct codes without it and 2,923 with it; samples 1-6 have 4,626 without and 4,752 with.
- SEGMENT=2 rows are skipped: each continues a claim already present, with no dates and no diagnoses
  (so skipping them changes no count, but keeping them would invent undated visits).
- A claim with no diagnosis code is not a visit; a beneficiary with no such claim is dropped.
- Sex is BENE_SEX_IDENT_CD (1 = M, 2 = F); age is whole years from BENE_BIRTH_DT to the first claim,
  capped at 90. Both are the same in the 2008, 2009 and 2010 files; the first file listing a
  beneficiary (2008, by name order) is used.
- A folder without these files but with sample sub-folders loads them all together: DESYNPUF_IDs
  are unique across CMS samples.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from promptehr.model.data.assemble import (
    cap_age,
    clean_codes,
    first_visits,
    order_rows,
    to_patients,
    whole_years,
)
from promptehr.model.data.reading import (
    CSV_SUFFIXES,
    fail,
    parse_numbers,
    parse_sex,
    parse_times,
    read_table,
    require,
)
from promptehr.model.data.systems import resolve_codes
from promptehr.model.errors import DataError
from promptehr.model.patient import Patient

DX_COLUMNS = [f"icd9_dgns_cd_{k}" for k in range(1, 11)]
BENEFICIARY = "beneficiary_summary_file"
INPATIENT = "inpatient_claims"
END = "clm_thru_dt"


def _files(folder: Path, marker: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and marker in p.name.lower() and p.name.lower().endswith(CSV_SUFFIXES))


def sample_folders(folder: Path) -> list[Path]:
    """The folder itself if it holds both kinds of file, else its sub-folders that do."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    if _files(folder, BENEFICIARY) and _files(folder, INPATIENT):
        return [folder]
    return [d for d in sorted(folder.iterdir()) if d.is_dir() and _files(d, BENEFICIARY) and _files(d, INPATIENT)]


def read_beneficiaries(paths: list[Path]) -> pd.DataFrame:
    frames = []
    for i, path in enumerate(paths):
        df = read_table(path, ["desynpuf_id", "bene_birth_dt", "bene_sex_ident_cd"], file_index=i)
        require(paths, df, ["desynpuf_id", "bene_birth_dt", "bene_sex_ident_cd"])
        df["sex"] = parse_sex(paths, df, "bene_sex_ident_cd", {"1": "M", "2": "F"})
        df["birth"] = parse_times(paths, df, "bene_birth_dt", fmt="%Y%m%d")
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates("desynpuf_id").set_index("desynpuf_id")


def read_claims(paths: list[Path], code_system: str | None = None) -> pd.DataFrame:
    """One row per diagnosis slot of a SEGMENT 1 claim, in the common long shape of assemble.py."""
    frames = []
    for i, path in enumerate(paths):
        df = read_table(path, ["desynpuf_id", "clm_id", "segment", "clm_from_dt", "clm_admsn_dt", END, *DX_COLUMNS],
                        file_index=i, optional=(END,))
        require(paths, df, ["desynpuf_id", "clm_id"])
        df = df[(parse_numbers(paths, df, "segment") != 2).to_numpy()]
        time = parse_times(paths, df, "clm_admsn_dt", fmt="%Y%m%d").fillna(parse_times(paths, df, "clm_from_dt", fmt="%Y%m%d"))
        undated = time.isna().to_numpy()
        if undated.any():
            fail(paths, df, undated, "claim without a date: expected CLM_ADMSN_DT or CLM_FROM_DT", column="clm_from_dt")
        # A file without the column has no ends (NaT): a mix of files is then "some ends missing".
        end = parse_times(paths, df, END, fmt="%Y%m%d") if END in df else pd.Series(pd.NaT, index=df.index, dtype="datetime64[us]")
        # Wide -> long without a row loop: ravel the 10 slots row-major so each claim's codes stay in slot order.
        k = len(DX_COLUMNS)
        frames.append(pd.DataFrame({
            "patient_id": np.repeat(df["desynpuf_id"].to_numpy(dtype=object), k),
            "visit_id": np.repeat(df["clm_id"].to_numpy(dtype=object), k),
            "time": np.repeat(time.to_numpy(), k),
            "end": np.repeat(end.to_numpy(), k),
            "seq": np.tile(np.arange(1, k + 1, dtype=float), len(df)),
            "code": df[DX_COLUMNS].to_numpy(dtype=object).ravel(),
            "_line": np.repeat(df["_line"].to_numpy(), k),
            "_file": np.repeat(df["_file"].to_numpy(), k),
        }))
    rows = pd.concat(frames, ignore_index=True)
    rows["code"] = clean_codes(rows["code"].astype("str"))
    # A bad code names the slot column it came from: seq k is ICD9_DGNS_CD_k.
    rows = resolve_codes(paths, rows, "icd9", code_system, name=lambda df, i: DX_COLUMNS[int(df["seq"].iat[i]) - 1])
    # A claim id listed twice with different dates stays one visit, at its earliest date.
    rows["time"] = rows.groupby(["patient_id", "visit_id"], sort=False)["time"].transform("min")
    return rows


def load_desynpuf(folder: Path, code_system: str | None = None) -> list[Patient]:
    folders = sample_folders(folder)
    if not folders:
        raise DataError(folder, "no DE-SynPUF files: expected *Beneficiary_Summary_File*.csv and *Inpatient_Claims*.csv here or in sample sub-folders")
    bene_paths = [p for d in folders for p in _files(d, BENEFICIARY)]
    claim_paths = [p for d in folders for p in _files(d, INPATIENT)]
    bene = read_beneficiaries(bene_paths)
    rows = order_rows(read_claims(claim_paths, code_system))
    first = first_visits(rows).reset_index()
    unknown = bene.index.get_indexer(first["patient_id"]) < 0  # (isin on arrow strings loops in Python)
    if unknown.any():
        fail(claim_paths, first, unknown, "DESYNPUF_ID not in any beneficiary summary file: expected every claimant to be listed", column="patient_id", name="desynpuf_id")
    b = bene.reindex(first["patient_id"])
    age = whole_years(b["birth"], first["time"].astype("datetime64[us]").set_axis(b.index))
    negative = (age < 0).to_numpy()
    if negative.any():
        fail(bene_paths, b, negative, "birth date after the first claim: expected a non-negative age", column="bene_birth_dt")
    return to_patients(rows, cap_age(age), b["sex"], claim_paths[0], end_paths=claim_paths, end_column="CLM_THRU_DT")
