"""MIMIC-III specifics on copies of the real demo: header case, gzip, ordering, ages, codes."""
from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd

from promptehr.model.data import load_patients

TABLES = ("PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD")


def copy_demo(src: Path, dst: Path, *, upper: bool = False, gz: bool = False, lower_names: bool = False) -> Path:
    """The three tables the loader needs, optionally with upper-case headers, gzipped, or renamed."""
    dst.mkdir(parents=True, exist_ok=True)
    for t in TABLES:
        text = (src / f"{t}.csv").read_text()
        header, rest = text.split("\n", 1)
        text = (header.upper() if upper else header) + "\n" + rest
        name = (t.lower() if lower_names else t) + (".csv.gz" if gz else ".csv")
        (dst / name).write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return dst


def test_upper_case_headers_and_gzip_give_the_same_patients(shared_data, tmp_path):
    base = load_patients(shared_data / "mimic3-demo")
    for i, kw in enumerate([{"upper": True}, {"gz": True}, {"upper": True, "gz": True, "lower_names": True}]):
        folder = copy_demo(shared_data / "mimic3-demo", tmp_path / str(i), **kw)
        assert load_patients(folder) == base, kw


def test_ages_capped_at_90(shared_data):
    ps = {p.id: p for p in load_patients(shared_data / "mimic3-demo")}
    pat = pd.read_csv(shared_data / "mimic3-demo/PATIENTS.csv", dtype=str).set_index("subject_id")
    adm = pd.read_csv(shared_data / "mimic3-demo/ADMISSIONS.csv", dtype=str)
    first = adm.assign(t=pd.to_datetime(adm.admittime)).groupby("subject_id").t.min()
    raw = {s: first[s].year - pd.Timestamp(pat.dob[s]).year for s in first.index}
    shifted = [s for s, a in raw.items() if a > 200]  # MIMIC puts >89s at about 300
    assert shifted and all(ps[s].age == 90 for s in shifted)
    assert max(p.age for p in ps.values()) == 90


def test_leading_zeros_and_seq_order_kept(shared_data):
    diag = pd.read_csv(shared_data / "mimic3-demo/DIAGNOSES_ICD.csv", dtype=str)
    ps = {p.id: p for p in load_patients(shared_data / "mimic3-demo")}
    zero = diag[diag.icd9_code.str.startswith("0")].iloc[0]
    visit = diag[diag.hadm_id == zero.hadm_id].assign(seq=lambda d: d.seq_num.astype(int)).sort_values("seq")
    assert visit.icd9_code.tolist() in ps[zero.subject_id].visits
    assert any(c.startswith("0") for p in ps.values() for v in p.visits for c in v)


def test_visits_in_time_order(shared_data):
    ps = {p.id: p for p in load_patients(shared_data / "mimic3-demo")}
    adm = pd.read_csv(shared_data / "mimic3-demo/ADMISSIONS.csv", dtype=str)
    diag = pd.read_csv(shared_data / "mimic3-demo/DIAGNOSES_ICD.csv", dtype=str)
    many = adm.subject_id.value_counts().idxmax()  # the patient with 15 admissions
    order = adm[adm.subject_id == many].sort_values("admittime").hadm_id
    firsts = [diag[(diag.hadm_id == h) & (diag.seq_num == "1")].icd9_code.iat[0] for h in order]
    assert [v[0] for v in ps[many].visits] == firsts


def test_duplicates_within_visit_dropped_in_seq_order(shared_data, tmp_path):
    folder = copy_demo(shared_data / "mimic3-demo", tmp_path / "dup")
    diag = pd.read_csv(folder / "DIAGNOSES_ICD.csv", dtype=str)
    row = diag.iloc[[0]].assign(seq_num="99", row_id="1")  # repeat the first code of the first admission, last
    pd.concat([row, diag]).to_csv(folder / "DIAGNOSES_ICD.csv", index=False)  # placed first in the file
    ps = {p.id: p for p in load_patients(folder)}
    first = ps[row.subject_id.iat[0]].visits[0]
    assert first[0] == row.icd9_code.iat[0] and first.count(row.icd9_code.iat[0]) == 1
    assert sum(p.n_codes for p in ps.values()) == 1761
