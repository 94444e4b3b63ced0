"""`promptehr data stats` end to end, in a subprocess as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_data_mimic3 import copy_demo

REPO = Path(__file__).resolve().parents[1]


def promptehr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "promptehr.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_stats_prints_one_json_object(shared_data):
    r = promptehr("data", "stats", str(shared_data / "mimic3-demo"))
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert (stats["patients"], stats["visits"], stats["codes"]) == (100, 129, 581)
    assert stats["sex"] == {"F": 55, "M": 45} and set(stats["age"]) == {"min", "max", "mean", "median"}


def test_malformed_csv_gives_exit_2_and_one_line(shared_data, tmp_path):
    folder = copy_demo(shared_data / "mimic3-demo", tmp_path / "bad")
    path = folder / "DIAGNOSES_ICD.csv"
    lines = path.read_text().split("\n")
    lines[6] += ",oops"
    path.write_text("\n".join(lines))
    r = promptehr("data", "stats", "--format", "mimic3", str(folder))
    assert r.returncode == 2
    assert r.stdout == ""
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("promptehr data: error: ") and f"{path}, line 7" in err


def test_cli_format_choices_match_the_loaders():
    from promptehr.cli.data import FORMATS as cli_formats
    from promptehr.model.data import FORMATS

    assert cli_formats == FORMATS


def test_cli_code_systems_match_the_model():
    from promptehr.cli.data import SYSTEMS as cli_systems
    from promptehr.model.codes import SYSTEMS

    assert cli_systems == SYSTEMS


def test_stats_of_mixed_mimic4_and_one_system(shared_data):
    r = promptehr("data", "stats", str(shared_data / "mimic4-demo"))
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert (stats["patients"], stats["visits"], stats["codes"]) == (100, 275, 1474)
    assert stats["codes_by_system"] == {"icd9": 740, "icd10": 734}
    r = promptehr("data", "stats", "--code-system", "icd9", str(shared_data / "mimic4-demo"))
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["patients"], json.loads(r.stdout)["codes_by_system"]) == (76, {"icd9": 740, "icd10": 0})


def test_bad_codes_and_systems_give_exit_2_and_one_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("patient_id,visit_id,visit_time,code\np1,v1,1,E8809\n")
    r = promptehr("data", "stats", str(path))
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert f"{path}, line 2, column 'code': ambiguous code" in r.stderr and "code_system column" in r.stderr
    r = promptehr("data", "stats", "--code-system", "icd11", str(path))  # argparse: usage line, then the error
    assert r.returncode == 2 and r.stdout == "" and "invalid choice: 'icd11'" in r.stderr
    r = promptehr("data", "stats", "--code-system", "icd10", str(path))
    assert r.returncode == 0 and json.loads(r.stdout)["codes_by_system"] == {"icd9": 0, "icd10": 1}
