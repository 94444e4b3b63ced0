"""Bad input: each case is a DataError whose one-line message names the file (and line / column)."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest

from promptehr.model.data import detect_format, load_patients
from promptehr.model.errors import DataError
from tests.test_data_desynpuf import CLAIMS, copy_test0
from tests.test_data_mimic3 import copy_demo


@pytest.fixture()
def demo(shared_data, tmp_path) -> Path:
    return copy_demo(shared_data / "mimic3-demo", tmp_path / "demo")


def edit_line(path: Path, line: int, change) -> None:
    """Rewrite 1-based `line` of a text file with change(str) -> str."""
    lines = path.read_text().split("\n")
    lines[line - 1] = change(lines[line - 1])
    path.write_text("\n".join(lines))


def error(path, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        load_patients(path, **kw)
    e = info.value
    assert "\n" not in str(e)
    return e


def test_missing_file(demo):
    (demo / "ADMISSIONS.csv").unlink()
    e = error(demo, format="mimic3")
    assert "ADMISSIONS.csv" in str(e) and "missing file" in str(e)


def test_missing_path_and_undetectable_folder(tmp_path):
    assert "no such file" in str(error(tmp_path / "nope"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="cannot tell the format"):
        detect_format(tmp_path)


def test_missing_column_named(demo):
    df = pd.read_csv(demo / "DIAGNOSES_ICD.csv", dtype=str).drop(columns=["icd9_code"])
    df.to_csv(demo / "DIAGNOSES_ICD.csv", index=False)
    e = error(demo)
    assert e.column == "icd9_code" and "DIAGNOSES_ICD.csv" in str(e) and "'icd9_code'" in str(e)


def test_unparseable_date_names_column_and_line(demo):
    edit_line(demo / "ADMISSIONS.csv", 6, lambda s: s.replace(s.split(",")[3], "2164-13-45 99:00:00", 1))
    e = error(demo)
    assert (Path(e.path).name, e.line, e.column) == ("ADMISSIONS.csv", 6, "admittime")
    assert "ADMISSIONS.csv, line 6, column 'admittime'" in str(e) and "2164-13-45" in str(e)


def test_malformed_row_names_line(demo):
    edit_line(demo / "DIAGNOSES_ICD.csv", 9, lambda s: s + ",extra")
    e = error(demo)
    assert (Path(e.path).name, e.line) == ("DIAGNOSES_ICD.csv", 9) and "malformed CSV row" in str(e)


def test_short_row_is_malformed_too(demo):
    edit_line(demo / "PATIENTS.csv", 4, lambda s: ",".join(s.split(",")[:3]))
    e = error(demo)
    assert (Path(e.path).name, e.line) == ("PATIENTS.csv", 4)


def test_non_utf8_names_line(demo):
    path = demo / "DIAGNOSES_ICD.csv"
    lines = path.read_bytes().split(b"\n")
    lines[11] = lines[11].rsplit(b",", 1)[0] + b",4\xff19"
    path.write_bytes(b"\n".join(lines))
    e = error(demo)
    assert (Path(e.path).name, e.line) == ("DIAGNOSES_ICD.csv", 12) and "UTF-8" in str(e)


def test_non_utf8_header(demo):
    path = demo / "PATIENTS.csv"
    path.write_bytes(b"\xe9" + path.read_bytes())
    assert error(demo).line == 1


def test_empty_and_corrupt_files(demo):
    (demo / "PATIENTS.csv").write_bytes(b"")
    assert "empty file" in str(error(demo, format="mimic3"))
    (demo / "PATIENTS.csv").unlink()
    (demo / "PATIENTS.csv.gz").write_bytes(b"not gzip at all")
    assert "PATIENTS.csv.gz" in str(error(demo, format="mimic3"))


def test_empty_data_set(demo):
    (demo / "DIAGNOSES_ICD.csv").write_text("row_id,subject_id,hadm_id,seq_num,icd9_code\n")
    assert "empty data set" in str(error(demo))


def test_unknown_sex_code(demo):
    edit_line(demo / "PATIENTS.csv", 3, lambda s: s.replace(",F,", ",X,", 1).replace(",M,", ",X,", 1))
    e = error(demo)
    assert (Path(e.path).name, e.line, e.column) == ("PATIENTS.csv", 3, "gender") and "'X'" in str(e)


def test_negative_age(demo):
    pat = pd.read_csv(demo / "PATIENTS.csv", dtype=str)
    pat.loc[pat.subject_id == "10006", "dob"] = "2190-01-01 00:00:00"  # after the first admission (2164)
    pat.to_csv(demo / "PATIENTS.csv", index=False)
    e = error(demo)
    line = int(pat.index[pat.subject_id == "10006"][0]) + 2
    assert (Path(e.path).name, e.line, e.column) == ("PATIENTS.csv", line, "dob")


def test_diagnosis_of_unknown_admission(demo):
    edit_line(demo / "DIAGNOSES_ICD.csv", 2, lambda s: s.replace(",142345,", ",999999,"))
    e = error(demo)
    assert (Path(e.path).name, e.line, e.column) == ("DIAGNOSES_ICD.csv", 2, "hadm_id") and "999999" in str(e)


def test_diagnosis_under_another_patient(demo):
    edit_line(demo / "DIAGNOSES_ICD.csv", 3, lambda s: s.replace(",10006,", ",10011,"))
    e = error(demo)
    assert (Path(e.path).name, e.line, e.column) == ("DIAGNOSES_ICD.csv", 3, "subject_id") and "10011" in str(e)


def test_patient_missing_from_patients_table(demo):
    pat = pd.read_csv(demo / "PATIENTS.csv", dtype=str)
    pat[pat.subject_id != "10006"].to_csv(demo / "PATIENTS.csv", index=False)
    e = error(demo)
    assert (Path(e.path).name, e.line, e.column) == ("DIAGNOSES_ICD.csv", 2, "subject_id") and "10006" in str(e)


def test_gzip_file_errors_name_the_gz_file(shared_data, tmp_path):
    folder = copy_demo(shared_data / "mimic3-demo", tmp_path / "gz", gz=True)
    path = folder / "DIAGNOSES_ICD.csv.gz"
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    lines[4] += b",1,2"
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    e = error(folder)
    assert (Path(e.path).name, e.line) == ("DIAGNOSES_ICD.csv.gz", 5)


def test_desynpuf_bad_sex_and_date(shared_data, tmp_path):
    folder = copy_test0(shared_data, tmp_path / "a")
    bene = folder / "DE1_0_2008_Beneficiary_Summary_File_Sample_0.csv"
    edit_line(bene, 2, lambda s: s.replace(",2,1,0,15,", ",7,1,0,15,"))
    e = error(folder)
    assert (Path(e.path).name, e.line, e.column) == (bene.name, 2, "bene_sex_ident_cd")
    folder = copy_test0(shared_data, tmp_path / "b")
    edit_line(folder / CLAIMS, 3, lambda s: s.replace("20100807", "2010-08-07"))
    e = error(folder)
    assert (Path(e.path).name, e.line, e.column) == (CLAIMS, 3, "clm_admsn_dt")


def test_long_format_errors(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("patient_id,visit_id,visit_time,code,sex\n1,1,2020-01-01,250,M\n2,2,2020-01-01,250,Q\n")
    e = error(csv)
    assert (e.line, e.column) == (3, "sex") and "(got 'Q')" in str(e)
    csv.write_text("patient_id,visit_id,visit_time,code,age\n1,1,2020-01-01,250,-3\n")
    assert error(csv).column == "age"
    csv.write_text("patient_id,visit_id,visit_time,code\n1,1,yesterday,250\n")
    assert (error(csv).line, error(csv).column) == (2, "visit_time")
    pq = tmp_path / "x.parquet"
    pd.DataFrame({"patient_id": ["1"], "visit_id": ["1"], "visit_time": [1.0]}).to_parquet(pq)
    e = error(pq)
    assert e.column == "code" and "x.parquet" in str(e)


# --- diagnosis codes: ICD-9-CM in MIMIC-III and DE-SynPUF ------------------------------------------

# Not ICD-9-CM shaped after stripping blanks and the one dot after a category: a dot elsewhere (a
# float column's 4019.0), lower case, too short or long, a wrong letter, non-ASCII digits
# (Arabic-Indic 4019), a blank inside, an ICD-10-CM code in an ICD-9 column.
BAD_CODES = ["XYZ!!", "4019.0", "25.000", "v5861", "40", "123456", "V1", "V12345", "E12", "E12345", "X123", "4019A",
             "\u0664\u0660\u0661\u0669", "40 19", "I10"]
# Every accepted shape: 3, 4 and 5 digits (leading zero kept), V + 2 and 4 digits, E + 3 and 4 digits.
GOOD_CODES = ["401", "4019", "40191", "0389", "V12", "V5861", "E849", "E8889"]


@pytest.mark.parametrize("code", BAD_CODES)
def test_mimic3_code_not_icd9_shaped_names_file_line_column_and_value(demo, code):
    edit_line(demo / "DIAGNOSES_ICD.csv", 7, lambda s: s.rsplit(",", 1)[0] + "," + code)
    e = error(demo)
    assert (Path(e.path).name, e.line, e.column) == ("DIAGNOSES_ICD.csv", 7, "icd9_code")
    assert "DIAGNOSES_ICD.csv, line 7, column 'icd9_code'" in str(e) and f"(got {code!r})" in str(e)
    assert "not an ICD-9-CM diagnosis code" in str(e)


def test_every_icd9_shape_loads_as_given(tmp_path):
    path = tmp_path / "x.csv"
    rows = "".join(f"p1,v{i},2020-01-{i + 1:02d},{c}\n" for i, c in enumerate(GOOD_CODES))
    path.write_text("patient_id,visit_id,visit_time,code\n" + rows + "p1,v0,2020-01-01, 4019 \n")
    (p,) = load_patients(path)
    assert p.visits == [["401", "4019"]] + [[c] for c in GOOD_CODES[1:]]


def test_mimic3_dotted_codes_load_undotted(demo):
    lines = (demo / "DIAGNOSES_ICD.csv").read_text().split("\n")
    code = lines[6].rsplit(",", 1)[1].strip('"')
    assert len(code) >= 4 and code.isdigit()
    edit_line(demo / "DIAGNOSES_ICD.csv", 7, lambda s: s.rsplit(",", 1)[0] + "," + code[:3] + "." + code[3:])
    subject = lines[6].split(",")[1]
    (p,) = [p for p in load_patients(demo) if p.id == subject]
    assert any(code in v for v in p.visits) and not any("." in c for v in p.visits for c in v)


def copy_mimic4(shared_data, dst: Path) -> tuple[Path, list[str]]:
    hosp = dst / "hosp"
    hosp.mkdir(parents=True)
    for t in ("patients", "admissions", "diagnoses_icd"):
        shutil.copy(shared_data / "mimic4-demo" / "hosp" / f"{t}.csv.gz", hosp)
    path = hosp / "diagnoses_icd.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode().split("\n")
    assert lines[0] == "subject_id,hadm_id,seq_num,icd_code,icd_version" and lines[1].endswith(",9")
    return path, lines


def test_mimic4_checks_the_rows_of_both_versions(shared_data, tmp_path):
    path, lines = copy_mimic4(shared_data, tmp_path / "m4")
    ten = next(i for i, s in enumerate(lines) if s.endswith(",10"))
    good = list(lines)
    good[1] = good[1].rsplit(",", 2)[0] + ",413.9,9"  # dotted ICD-9: stored undotted
    good[ten] = good[ten].rsplit(",", 2)[0] + ",E11.9,10"  # dotted ICD-10
    path.write_bytes(gzip.compress("\n".join(good).encode()))
    codes = {c for p in load_patients(tmp_path / "m4") for v in p.visits for c in v}
    assert {"4139", "icd10:E119"} <= codes and not any("." in c for c in codes)
    for line, value, column, words in ((ten, "NOT-ICD10!,10", "icd_code", "not an ICD-10-CM diagnosis code"),
                                       (ten, "4019,10", "icd_code", "not an ICD-10-CM diagnosis code"),
                                       (1, "I10,9", "icd_code", "not an ICD-9-CM diagnosis code"),
                                       (1, "4019,11", "icd_version", "unknown code system: expected 9 (ICD-9-CM) or 10")):
        bad = list(lines)
        bad[line] = bad[line].rsplit(",", 2)[0] + "," + value
        path.write_bytes(gzip.compress("\n".join(bad).encode()))
        e = error(tmp_path / "m4")
        assert (Path(e.path).name, e.line, e.column) == ("diagnoses_icd.csv.gz", line + 1, column) and words in str(e)


def test_desynpuf_codes_dotted_and_bad_name_their_slot_column(shared_data, tmp_path):
    folder = copy_test0(shared_data, tmp_path / "a")

    def slot_3(value: str):
        def change(s: str) -> str:
            fields = s.split(",")
            assert fields[22] in ("4019", "401.9")  # ICD9_DGNS_CD_3 of the second claim
            fields[22] = value
            return ",".join(fields)
        return change

    edit_line(folder / CLAIMS, 3, slot_3("401.9"))
    assert any("4019" in v for p in load_patients(folder) for v in p.visits)
    edit_line(folder / CLAIMS, 3, slot_3("40.19"))
    e = error(folder)
    assert (Path(e.path).name, e.line, e.column) == (CLAIMS, 3, "icd9_dgns_cd_3") and "(got '40.19')" in str(e)


def test_long_format_bad_code_in_csv_and_parquet(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("patient_id,visit_id,visit_time,code\n1,1,2020-01-01,4019\n1,1,2020-01-01,XYZ!!\n")
    e = error(csv)
    assert (e.line, e.column) == (3, "code") and "(got 'XYZ!!')" in str(e)
    pq = tmp_path / "x.parquet"
    pd.DataFrame({"patient_id": ["1", "1"], "visit_id": ["1", "1"], "visit_time": [1.0, 1.0],
                  "code": ["4019", "XYZ!!"]}).to_parquet(pq)
    e = error(pq)
    assert (e.line, e.column) == (None, "code") and "row 2:" in str(e) and "'XYZ!!'" in str(e)
    pd.DataFrame({"patient_id": ["1"], "visit_id": ["1"], "visit_time": [1.0], "code": [4019.0]}).to_parquet(pq)
    assert "(got '4019.0')" in str(error(pq))  # a float column: the code lost its form


def test_a_huge_bad_value_is_shown_shortened(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("patient_id,visit_id,visit_time,code\n1,1,2020-01-01," + "4" * 100_000 + "\n")
    e = error(csv)
    assert (e.line, e.column) == (2, "code") and "100,000 characters" in str(e) and len(str(e)) < 400
