"""Exports of cohorts holding ICD-10-CM codes (issue 11): the MIMIC-IV zip, JSONL and long CSV read back
to the same patients, systems included; the MIMIC-III zip refuses them; ICD-9-CM cohorts are as before.
From model/data/export.py and through GET /cohorts/{id}/export."""
from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptehr.model.data import load_patients
from promptehr.model.data.export import check_exportable, export_bytes, write_export
from promptehr.model.patient import Patient
from promptehr.service import store
from tests.support.service import assert_problem

# Both E8809s (ICD-9-CM fall, ICD-10-CM metabolic disorder), V codes of both, an ICD-10-CM code of an
# earlier year missing from the release (S0262XA), and a 7-character one.
MIXED = ["4019", "25000", "E8809", "icd10:E8809", "V5861", "icd10:V0001XA", "icd10:I10", "icd10:E119",
         "icd10:S0262XA", "icd10:S72001A", "E8881", "icd10:E8881", "icd10:Z7901"]
BOTH = ("icd9", "icd10")


@st.composite
def cohorts(draw, codes=MIXED):
    out = []
    for i in range(draw(st.integers(1, 6))):
        visits = draw(st.lists(st.lists(st.sampled_from(codes), min_size=1, max_size=5, unique=True), min_size=1, max_size=12))
        out.append(Patient(id=f"syn-{draw(st.integers(0, 99))}-{i:07d}", age=float(draw(st.integers(0, 90))),
                           sex=draw(st.sampled_from("MF")), visits=visits))
    return out


def same(a: Patient, b: Patient) -> bool:
    return (a.age, a.sex, a.visits) == (b.age, b.sex, b.visits)


def unzip(path, folder) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
        return sorted(zf.namelist())


FIXTURES = [HealthCheck.function_scoped_fixture]


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(cohorts())
def test_mimic4_zip_round_trip(tmp_path, patients):
    path, folder = tmp_path / "c.zip", tmp_path / "unzipped"
    write_export(iter(patients), path, "mimic4", code_systems=BOTH)
    assert unzip(path, folder) == ["admissions.csv", "diagnoses_icd.csv", "patients.csv"]
    back = load_patients(folder)  # format detected as mimic4 (the patients header has anchor_age)
    # subject_id is 10000000 + the 1-based position in the export: string order is export order
    assert [p.id for p in back] == [str(10000001 + i) for i in range(len(patients))]
    assert all(same(p, b) for p, b in zip(patients, back))


def test_mimic4_diagnoses_name_their_version():
    patients = [Patient("syn-1-0000000", 70.0, "F", [["4019", "icd10:E8809", "E8809"], ["icd10:I10"]])]
    with zipfile.ZipFile(io.BytesIO(b"".join(export_bytes(iter(patients), "mimic4", code_systems=BOTH)))) as zf:
        rows = list(csv.DictReader(io.TextIOWrapper(zf.open("diagnoses_icd.csv"), encoding="utf-8")))
        (pat,) = csv.DictReader(io.TextIOWrapper(zf.open("patients.csv"), encoding="utf-8"))
    assert [(r["seq_num"], r["icd_code"], r["icd_version"]) for r in rows] == [
        ("1", "4019", "9"), ("2", "E8809", "10"), ("3", "E8809", "9"), ("1", "I10", "10")]
    assert (pat["anchor_age"], pat["gender"]) == ("70", "F")
    assert pat["anchor_year_group"] == f"{2008 + 3 * ((int(pat['anchor_year']) - 2008) // 3)} - " \
                                       f"{2010 + 3 * ((int(pat['anchor_year']) - 2008) // 3)}"


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(cohorts())
def test_jsonl_keeps_the_prefixed_codes(tmp_path, patients):
    path = tmp_path / "c.jsonl"
    write_export(iter(patients), path, "jsonl", code_systems=BOTH)
    lines = path.read_text().splitlines()
    assert [Patient.from_dict(json.loads(line)) for line in lines] == patients
    assert all(c in MIXED for line in lines for v in json.loads(line)["visits"] for c in v)


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(cohorts())
def test_long_csv_names_each_codes_system(tmp_path, patients):
    path = tmp_path / "c.csv"
    write_export(iter(patients), path, "csv", code_systems=BOTH)
    header, *rows = list(csv.reader(io.StringIO(path.read_text())))
    assert header == ["patient_id", "visit_id", "visit_time", "code", "code_system", "age", "sex"]
    assert all(":" not in r[3] and r[4] in BOTH for r in rows)  # bare code, its system beside it
    back = {p.id: p for p in load_patients(path, format="long")}
    assert set(back) == {p.id for p in patients} and all(same(p, back[p.id]) for p in patients)


def test_icd9_cohorts_have_no_code_system_column():
    patients = [Patient("syn-1-0000000", 70.0, "F", [["4019", "E8809"]])]
    icd9 = b"".join(export_bytes(iter(patients), "csv"))
    assert icd9.startswith(b"patient_id,visit_id,visit_time,code,age,sex\n")
    assert icd9 == b"".join(export_bytes(iter(patients), "csv", code_systems=["icd9"]))
    assert b",E8809,icd9," in b"".join(export_bytes(iter(patients), "csv", code_systems=BOTH))


def test_mimic3_zip_refuses_cohorts_with_icd10_codes_before_any_byte(tmp_path):
    patients = [Patient("syn-1-0000000", 70.0, "F", [["4019"]])]
    for systems in (BOTH, ("icd10",)):
        with pytest.raises(ValueError, match="a MIMIC-III zip holds ICD-9-CM codes only.*export as mimic4"):
            check_exportable("mimic3", systems)
        with pytest.raises(ValueError, match="MIMIC-III"):
            export_bytes(iter(patients), "mimic3", code_systems=systems)  # refused by the call itself
        with pytest.raises(ValueError, match="MIMIC-III"):
            write_export(iter(patients), tmp_path / "c.zip", "mimic3", code_systems=systems)
        assert not (tmp_path / "c.zip").exists()
    for fmt in ("jsonl", "csv", "mimic4"):
        check_exportable(fmt, BOTH)


@pytest.mark.parametrize("fmt", ["mimic3", "csv"])
def test_an_icd10_code_where_only_icd9_was_declared_is_an_error_not_a_bare_code(fmt):
    """A caller that forgets the cohort's systems gets an error, never an ICD-10 code passed off as ICD-9."""
    patients = [Patient("syn-1-0000000", 70.0, "F", [["4019"]]), Patient("syn-1-0000001", 50.0, "M", [["icd10:E8809"]])]
    with pytest.raises(ValueError, match="ICD-10-CM code E8809 in an export whose .* holds ICD-9-CM codes only"):
        b"".join(export_bytes(iter(patients), fmt))


# ---- GET /cohorts/{id}/export ----------------------------------------------------------------------

def stored_cohort(session, patients: list[Patient], code_systems: list[str] | None) -> str:
    """A generated cohort of `patients` (one shard), of a model registered with `code_systems`."""
    ds = store.create_dataset(session, name="d", format="mimic4", path="mimic4-demo", stats={})
    config = {"preset": "tiny"} if code_systems is None else {"preset": "tiny", "code_systems": code_systems}
    model = store.create_model(session, name="m", dataset_id=ds.id, checkpoint_path="/x", manifest_sha256="0" * 64,
                               config=config)
    cohort, (shard,) = store.create_cohort(session, model_id=model.id, n_patients=len(patients), seed=1, spec={},
                                           shard_size=len(patients))
    store.claim_job(session, "generate", shard.id, "w")
    store.insert_patients(session, cohort.id, 0, [p.to_dict() for p in patients])
    store.mark_succeeded(session, "generate", shard.id)
    return cohort.id


PATIENTS = [Patient(f"syn-1-{i:07d}", float(20 + i), "FM"[i % 2], [MIXED[i % 5: i % 5 + 3], MIXED[8:10]]) for i in range(9)]


def test_the_api_exports_a_mixed_cohort_as_the_cli_does(client, auth, session, tmp_path):
    cid = stored_cohort(session, PATIENTS, ["icd9", "icd10"])
    for fmt in ("jsonl", "csv", "mimic4"):
        r = client.get(f"/cohorts/{cid}/export?format={fmt}", headers=auth)
        assert r.status_code == 200, r.text
        assert r.content == b"".join(export_bytes(iter(PATIENTS), fmt, code_systems=BOTH)), fmt
    (tmp_path / "c.zip").write_bytes(r.content)
    unzip(tmp_path / "c.zip", tmp_path / "m4")
    assert all(same(p, b) for p, b in zip(PATIENTS, load_patients(tmp_path / "m4", format="mimic4")))
    r = client.get(f"/cohorts/{cid}/export?format=mimic3", headers=auth)
    problem = assert_problem(r, 422, "query.format")
    assert "a MIMIC-III zip holds ICD-9-CM codes only" in problem["errors"][0]["message"]


def test_the_api_exports_an_icd9_cohort_as_before(client, auth, session):
    icd9 = [Patient(p.id, p.age, p.sex, [[c for c in v if ":" not in c] or ["4019"] for v in p.visits]) for p in PATIENTS]
    cid = stored_cohort(session, icd9, None)  # a model registered before the systems were recorded
    for fmt in ("csv", "mimic3", "mimic4"):
        r = client.get(f"/cohorts/{cid}/export?format={fmt}", headers=auth)
        assert r.status_code == 200 and r.content == b"".join(export_bytes(iter(icd9), fmt)), fmt
    assert r.headers["content-type"] == "application/zip"
