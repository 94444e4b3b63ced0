"""The CLI with both code systems (issue 11): bad codes and systems are one line and exit 2 (train,
generate --require), `promptehr evaluate --code-system` reads the real data in one system, and a
mixed model's cohort goes out as a MIMIC-IV zip, never as a MIMIC-III one."""
from __future__ import annotations

import json
import zipfile

import pytest

from promptehr.cli.main import main
from promptehr.model.data import load_patients
from promptehr.model.generation.cohort import CohortSpec
from promptehr.model.patient import Patient

HEADER = "patient_id,visit_id,visit_time,code\n"


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == "", captured
    return lines[0]


@pytest.mark.parametrize("rows, message", [
    ("p1,v1,1,E8809\np1,v2,2,V103\n", "line 2, column 'code': ambiguous code"),  # valid in both, no system
    ("p1,v1,1,4019\np1,v2,2,I10\n", "code_system column"),  # a file mixing the systems without the column
    ("p1,v1,1,4019\np1,v2,2,XYZ!!\n", "line 3, column 'code'"),  # valid in neither
])
def test_train_refuses_bad_codes_in_one_line(tmp_path, capsys, rows, message):
    data = tmp_path / "x.csv"
    data.write_text(HEADER + rows)
    assert main(["train", "--data", str(data), "--preset", "tiny", "--max-steps", "1", "--device", "cpu",
                 "--out", str(tmp_path / "m")]) == 2
    line = one_error_line(capsys)
    assert str(data) in line and message in line
    assert not (tmp_path / "m").exists()


def test_train_refuses_an_unknown_system(tmp_path, capsys):
    data = tmp_path / "x.csv"
    data.write_text(HEADER + "p1,v1,1,4019\n")
    with pytest.raises(SystemExit) as info:  # argparse: its usage line, then the error
        main(["train", "--data", str(data), "--code-system", "icd11", "--out", str(tmp_path / "m")])
    assert info.value.code == 2 and "invalid choice: 'icd11'" in capsys.readouterr().err


@pytest.mark.parametrize("code, message", [
    ("I10", "a bare code is ICD-9-CM, an ICD-10-CM one is written icd10:I10"),
    ("icd11:I10", "unknown code system 'icd11'"),
    ("icd10:4019", "not an ICD-10-CM diagnosis code"),
])
def test_generate_refuses_a_bad_required_code_before_loading_a_model(tmp_path, capsys, code, message):
    assert main(["generate", "--model", str(tmp_path / "no-model"), "--n", "5", "--require", code,
                 "--out", str(tmp_path / "c.jsonl")]) == 2
    assert message in one_error_line(capsys)


def test_required_codes_from_the_cli_take_both_systems():
    spec = CohortSpec.from_dict({"required_codes": ["401.9", "icd9:25000", "icd10:E11.9", "ICD10:i10"]})
    assert spec.required_codes == ("4019", "25000", "icd10:E119", "icd10:I10")
    with pytest.raises(ValueError, match="repeat"):
        CohortSpec.from_dict({"required_codes": ["4019", "icd9:401.9"]})


def test_evaluate_reads_the_real_data_in_the_given_system(tmp_path, shared_data, capsys):
    synthetic = tmp_path / "cohort.jsonl"
    patients = [Patient(f"s{i}", 50.0 + i % 30, "FM"[i % 2], [["4019", "25000"], ["4280"]]) for i in range(40)]
    synthetic.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in patients))
    real = str(shared_data / "mimic4-demo")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--synthetic", str(synthetic), "--real", real, "--code-system", "icd9", "--out", str(out)]) == 0
    data = json.loads(out.read_text())["data"]
    assert 60 < data["train"]["patients"] + data["holdout"]["patients"] < 76  # of MIMIC-IV's 76 with ICD-9 admissions
    capsys.readouterr()
    assert main(["evaluate", "--synthetic", str(synthetic), "--real", str(shared_data / "mimic3-demo"),
                 "--code-system", "icd10", "--out", str(out)]) == 2
    assert "no ICD-10-CM codes" in one_error_line(capsys)


@pytest.fixture(scope="module")
def mixed_model(shared_data, tmp_path_factory, one_thread):
    """A tiny model of the whole MIMIC-IV demo (both systems); a few steps are enough to export."""
    out = tmp_path_factory.mktemp("m4") / "model"
    assert main(["train", "--data", str(shared_data / "mimic4-demo"), "--preset", "tiny", "--max-steps", "3",
                 "--device", "cpu", "--out", str(out)]) == 0
    return out


def generate(model, out, *args) -> int:
    return main(["generate", "--model", str(model), "--n", "40", "--seed", "2", "--threads", "1", "--out", str(out), *args])


def test_generate_writes_a_mixed_cohort_as_a_mimic4_zip_and_refuses_mimic3(mixed_model, tmp_path, capsys):
    assert generate(mixed_model, tmp_path / "c.zip") == 2  # .zip is MIMIC-III by default
    line = one_error_line(capsys)
    assert "a MIMIC-III zip holds ICD-9-CM codes only" in line and "--format mimic4" in line
    assert not (tmp_path / "c.zip").exists()
    assert generate(mixed_model, tmp_path / "c.jsonl") == 0
    cohort = [Patient.from_dict(json.loads(line)) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert generate(mixed_model, tmp_path / "c4.zip", "--format", "mimic4") == 0
    with zipfile.ZipFile(tmp_path / "c4.zip") as zf:
        zf.extractall(tmp_path / "m4")
    back = load_patients(tmp_path / "m4")
    kept = [p for p in cohort if p.visits]  # a patient without visits has no admission to write
    assert [(p.age, p.sex, p.visits, p.visit_days, p.los_days) for p in back] == \
        [(p.age, p.sex, p.visits, p.visit_days, p.los_days) for p in kept]  # the model learned time: the zip keeps it
    assert generate(mixed_model, tmp_path / "c.csv") == 0
    header = (tmp_path / "c.csv").read_text().split("\n", 1)[0]
    assert header == "patient_id,visit_id,visit_time,visit_end,code,code_system,age,sex"
