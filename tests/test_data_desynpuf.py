"""DE-SynPUF specifics: slot order, empty slots, admitting code, SEGMENT 2, ages, sample folders."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from promptehr.model.data import load_patients

TEST0 = "desynpuf-ohdsi-test0"
CLAIMS = "DE1_0_2008_to_2010_Inpatient_Claims_Sample_0.csv"


def copy_test0(shared: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in (shared / TEST0).glob("*.csv"):
        if "Beneficiary" in f.name or "Inpatient" in f.name:
            shutil.copy(f, dst / f.name)
    return dst


def test_codes_in_slot_order_empty_slots_skipped_admitting_code_out(shared_data):
    ps = {p.id: p for p in load_patients(shared_data / TEST0)}
    assert ps["0002056B40CEE448"].visits == [["71537", "49390", "2875", "4254", "2720", "0416", "4280", "2811", "4019"]]
    # slot 4 is empty in the source; E8889 kept as written
    assert ps["0004D03F1BD5E607"].visits == [["95919", "2948", "4019", "2720", "V065", "27801", "496", "7213", "E8889"]]
    codes = {c for p in ps.values() for v in p.visits for c in v}
    assert "7295" not in codes and "85201" not in codes  # the two admitting codes
    # born 1920-10-01, first claim 2009-02-08 / born 1943-07-01, first claim 2010-08-07
    assert (ps["0002056B40CEE448"].age, ps["0002056B40CEE448"].sex) == (88, "F")
    assert (ps["0004D03F1BD5E607"].age, ps["0004D03F1BD5E607"].sex) == (67, "M")


def test_segment_2_rows_skipped(shared_data, tmp_path):
    folder = copy_test0(shared_data, tmp_path / "seg")
    lines = (folder / CLAIMS).read_text().splitlines()
    fields = lines[1].split(",")
    assert fields[2] == "1" and fields[20] == "71537"
    fields[2], fields[20], fields[3] = "2", "V4581", "20080101"  # a continuation carrying a code and an earlier date
    (folder / CLAIMS).write_text("\n".join(lines + [",".join(fields)]) + "\n")
    ps = load_patients(folder)
    assert sum(len(p.visits) for p in ps) == 2
    assert all("V4581" not in v for p in ps for v in p.visits)


def test_real_segment_2_rows_change_nothing(shared_data):
    folder = shared_data / "desynpuf-sample/1-sample-10000"
    claims = pd.read_csv(next(folder.glob("*Inpatient*")), dtype=str, usecols=["DESYNPUF_ID", "CLM_ID", "SEGMENT"])
    assert (claims.SEGMENT == "2").sum() == 7
    ps = load_patients(folder)
    assert sum(len(p.visits) for p in ps) == claims[claims.SEGMENT == "1"].CLM_ID.nunique() == 5768


def test_parent_folder_equals_its_samples(shared_data, tmp_path):
    parent = tmp_path / "parent"
    copy_test0(shared_data, parent / "0-sample")
    one = load_patients(shared_data / TEST0)
    assert load_patients(parent) == one
    assert load_patients(parent, format="desynpuf") == one
