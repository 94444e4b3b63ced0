"""Loading ICD-10-CM beside ICD-9-CM: MIMIC-IV's two versions, the long format's code_system column and
its detection, dotted codes, and the errors (model/data/systems.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from promptehr.model.data import load_patients
from promptehr.model.errors import DataError
from promptehr.model.patient import Patient
from promptehr.model.tokens.vocab import Vocabulary

HEADER = "patient_id,visit_id,visit_time,code"


def long_csv(path: Path, codes: list[str], systems: list[str] | None = None) -> Path:
    """One patient, one visit per code (day i), optionally a code_system column."""
    head = HEADER + (",code_system" if systems else "")
    rows = [f"p1,v{i},{i}," + c + (f",{systems[i]}" if systems else "") for i, c in enumerate(codes)]
    path.write_text("\n".join([head, *rows]) + "\n")
    return path


def codes_of(patients: list[Patient]) -> list[str]:
    return [c for p in patients for v in p.visits for c in v]


def error(path, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        load_patients(path, **kw)
    assert "\n" not in str(info.value)
    return info.value


def test_mimic4_keeps_both_versions_apart(shared_data):
    ps = load_patients(shared_data / "mimic4-demo")
    codes = set(codes_of(ps))
    assert {"E8809", "icd10:E8809", "E8881", "icd10:E8881"} <= codes  # ICD-9 falls, ICD-10 metabolic disorders
    assert len(codes) == 1474 and sum(c.startswith("icd10:") for c in codes) == 734
    # An admission is coded in one version: no visit mixes them.
    assert all(len({c.startswith("icd10:") for c in v}) == 1 for p in ps for v in p.visits)


def test_the_colliding_codes_stay_four_tokens(shared_data):
    vocab = Vocabulary.build(load_patients(shared_data / "mimic4-demo"))
    ids = {c: vocab.code_id(c) for c in ("E8809", "icd10:E8809", "E8881", "icd10:E8881")}
    assert None not in ids.values() and len(set(ids.values())) == 4
    cats = {c: vocab.token_of(vocab.category_token_of(i)) for c, i in ids.items()}
    assert cats == {"E8809": "E880", "icd10:E8809": "icd10:E88", "E8881": "E888", "icd10:E8881": "icd10:E88"}
    assert vocab.code_systems == ("icd9", "icd10")


def test_icd10_only_file_is_read_as_icd10_and_dots_are_removed(tmp_path):
    (p,) = load_patients(long_csv(tmp_path / "x.csv", ["I10", "E11.9", "S72.001A", "E8809", "Z79.01"]))
    assert codes_of([p]) == ["icd10:I10", "icd10:E119", "icd10:S72001A", "icd10:E8809", "icd10:Z7901"]


def test_icd9_file_with_codes_valid_in_both_is_read_as_icd9(tmp_path):
    """4019 (digits) and V5861 (in the ICD-9 table only) tell the system; E8809 and V103 follow it."""
    (p,) = load_patients(long_csv(tmp_path / "x.csv", ["E8809", "V103", "401.9", "V58.61"]))
    assert codes_of([p]) == ["E8809", "V103", "4019", "V5861"]


def test_a_file_whose_codes_are_all_ambiguous_is_refused(tmp_path):
    path = long_csv(tmp_path / "x.csv", ["E8809", "E8881"])
    e = error(path)
    assert (Path(e.path).name, e.line, e.column) == ("x.csv", 2, "code") and "(got 'E8809')" in str(e)
    assert "ambiguous code: valid in both ICD-9-CM and ICD-10-CM" in str(e) and "add a code_system column (icd9 or icd10)" in str(e)
    # The data set's system, or the column, settles it.
    assert codes_of(load_patients(path, code_system="icd10")) == ["icd10:E8809", "icd10:E8881"]
    assert codes_of(load_patients(path, code_system="icd9")) == ["E8809", "E8881"]
    both = long_csv(tmp_path / "y.csv", ["E8809", "E8809"], ["icd9", "10"])
    assert codes_of(load_patients(both)) == ["E8809", "icd10:E8809"]


def test_a_file_mixing_systems_without_the_column_is_refused(tmp_path):
    e = error(long_csv(tmp_path / "x.csv", ["4019", "E8809", "I10"]))
    assert (e.line, e.column) == (4, "code") and "(got 'I10')" in str(e)
    assert "codes of both systems in one file (line 2 has the ICD-9-CM code '4019'" in str(e) and "code_system column" in str(e)


def test_each_file_of_a_folder_is_read_in_its_own_system(tmp_path):
    long_csv(tmp_path / "a.csv", ["4019", "E8809"])
    (tmp_path / "b.csv").write_text(HEADER + "\np2,w1,1,E8809\np2,w1,1,I10\n")
    ps = load_patients(tmp_path)
    assert [codes_of([p]) for p in ps] == [["4019", "E8809"], ["icd10:E8809", "icd10:I10"]]


def test_code_system_column_spellings_and_prefixed_codes(tmp_path):
    path = long_csv(tmp_path / "x.csv", ["4019", "I10", "E8809", "icd10:E11.9", "icd9:V5861"], ["icd9", "ICD10", "10", "icd10", "9"])
    assert codes_of(load_patients(path)) == ["4019", "icd10:I10", "icd10:E8809", "icd10:E119", "V5861"]
    # Prefixes alone name the system (the project's own exports write codes this way).
    prefixed = long_csv(tmp_path / "y.csv", ["icd10:E8809", "icd9:E8809", "4019"])
    assert codes_of(load_patients(prefixed)) == ["icd10:E8809", "E8809", "4019"]


def test_parquet_code_system_as_integers(tmp_path):
    path = tmp_path / "x.parquet"
    pd.DataFrame({"patient_id": ["1", "1"], "visit_id": ["1", "2"], "visit_time": [1.0, 2.0],
                  "code": ["E8809", "E8809"], "code_system": [9, 10]}).to_parquet(path)
    assert codes_of(load_patients(path)) == ["E8809", "icd10:E8809"]


def test_unknown_system_names_are_refused(tmp_path, shared_data):
    e = error(long_csv(tmp_path / "x.csv", ["4019", "I10"], ["icd9", "icd11"]))
    assert (e.line, e.column) == (3, "code_system") and "unknown code system: expected icd9 or icd10" in str(e) and "'icd11'" in str(e)
    e = error(long_csv(tmp_path / "y.csv", ["icd11:I10"]))
    assert (e.line, e.column) == (2, "code") and "unknown code system prefix" in str(e)
    e = error(shared_data / "mimic3-demo", code_system="icd11")
    assert e.path is None and "unknown code system 'icd11'" in str(e)
    e = error(long_csv(tmp_path / "z.csv", ["4019", "I10"], ["icd9", ""]))
    assert (e.line, e.column) == (3, "code_system") and "empty code system" in str(e)


@pytest.mark.parametrize("code", ["XYZ!!", "4019.0", "I10.", "40 19", "i10", "I10ABCDE"])
def test_a_code_valid_in_neither_system_names_file_line_column_and_value(tmp_path, code):
    e = error(long_csv(tmp_path / "x.csv", ["4019", code]))
    assert (Path(e.path).name, e.line, e.column) == ("x.csv", 3, "code") and f"(got {code!r})" in str(e)
    assert "not an ICD-9-CM or ICD-10-CM diagnosis code" in str(e)


def test_a_declared_system_checks_its_own_shape(tmp_path):
    e = error(long_csv(tmp_path / "x.csv", ["4019", "I10"], ["icd9", "icd9"]))
    assert (e.line, e.column) == (3, "code") and "not an ICD-9-CM diagnosis code" in str(e)
    e = error(long_csv(tmp_path / "y.csv", ["4019"]), code_system="icd10")
    assert e.line == 2 and "not an ICD-10-CM diagnosis code" in str(e)
    e = error(long_csv(tmp_path / "z.csv", ["icd10:I10"], ["icd9"]))
    assert e.line == 2 and "prefix names another system" in str(e)


def test_codes_missing_from_the_release_are_kept(shared_data):
    """MIMIC-IV holds ICD-10-CM codes of earlier years (S0262XA): kept, not refused."""
    codes = set(codes_of(load_patients(shared_data / "mimic4-demo", code_system="icd10")))
    assert "icd10:S0262XA" in codes


def test_a_system_the_source_cannot_hold_is_an_error(shared_data):
    e = error(shared_data / "mimic3-demo", code_system="icd10")
    assert "no ICD-10-CM codes: the source's codes are ICD-9-CM" in str(e)
