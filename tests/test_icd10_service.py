"""The API with both code systems (issue 11): required codes of POST /cohorts in either form, POST
/datasets' code_system, the systems GET /models/{id} lists, and the worker reading both as registered."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from promptehr.model.generation.cohort import CohortSpec
from promptehr.model.patient import Patient
from promptehr.model.tokens.vocab import Vocabulary
from promptehr.service import store
from promptehr.service.migrate import upgrade
from promptehr.service.settings import Settings
from tests.support.service import assert_problem, make_model
from promptehr.worker.context import make_context
from promptehr.worker.dispatch import TRAIN, run_task
from promptehr.worker.train_task import code_systems_of, load_dataset

AGE = {"distribution": "normal", "mean": 60, "sd": 10, "min": 18, "max": 90}


def mixed_model(session) -> str:
    """A model row as training on mixed data (MIMIC-IV) registers it: it knows both systems."""
    ds = store.create_dataset(session, name="d", format="mimic4", path="mimic4-demo", stats={})
    return store.create_model(session, name="m", dataset_id=ds.id, checkpoint_path="/x", manifest_sha256="0" * 64,
                              config={"preset": "tiny", "code_systems": ["icd9", "icd10"]}).id


def _cohort(session, codes, model_id=None) -> dict:
    return {"model_id": model_id or mixed_model(session), "n_patients": 5, "seed": 1, "age": AGE,
            "sex": {"female": 0.5}, "required_codes": codes}


# ---- POST /cohorts: required codes ----------------------------------------------------------------

def test_required_codes_in_both_forms_are_stored_as_the_model_writes_them(client, auth, session, runner):
    given = ["4019", "icd9:25000", "icd10:I10", {"code": "E119", "system": "icd10"}, {"code": "E8809", "system": "icd9"},
             {"code": "E8809", "system": "icd10"}]  # the two E8809s are two codes
    r = client.post("/cohorts", json=_cohort(session, given), headers=auth)
    assert r.status_code == 202, r.text
    stored = ["4019", "25000", "icd10:I10", "icd10:E119", "E8809", "icd10:E8809"]
    assert r.json()["spec"]["required_codes"] == stored
    # The worker reads the stored spec back to the same codes.
    cohort = store.get_cohort(session, r.json()["id"])
    assert CohortSpec.from_dict(cohort.spec).required_codes == tuple(stored)


def test_a_required_code_of_a_system_the_model_does_not_know_is_422(client, auth, session, runner):
    icd9_model = make_model(session)  # registered without code systems: ICD-9-CM only
    body = _cohort(session, ["4019", {"code": "I10", "system": "icd10"}], model_id=icd9_model)
    problem = assert_problem(client.post("/cohorts", json=body, headers=auth), 422, "body.required_codes.1")
    assert problem["errors"][0]["message"] == "I10 (ICD-10-CM): the model knows ICD-9-CM codes only"
    assert runner == [] and store.list_cohorts(session, limit=10) == []
    r = client.post("/cohorts", json={**body, "required_codes": ["4019", "icd9:25000"]}, headers=auth)
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("codes, field", [
    (["I10"], "body.required_codes.0"),  # a bare code is ICD-9-CM, and I10 is not one
    (["icd11:I10"], "body.required_codes.0"),
    (["icd10:4019"], "body.required_codes.0"),
    (["icd10:E11.9"], "body.required_codes.0"),  # undotted, as ICD-9 codes are here
    ([{"code": "I10", "system": "icd11"}], "body.required_codes.0.object.system"),
    ([{"code": "I10", "system": "ICD-10-CM"}], "body.required_codes.0.object.system"),
    ([{"code": "4019", "system": "icd10"}], "body.required_codes.0.object"),
    ([{"code": "I10"}], "body.required_codes.0.object.system"),
    ([{"code": "I10", "system": "icd10", "title": "x"}], "body.required_codes.0.object.title"),
    (["4019", "icd9:4019"], "body.required_codes"),  # one code twice
])
def test_bad_required_codes_are_422_naming_the_field(client, auth, session, runner, codes, field):
    problem = assert_problem(client.post("/cohorts", json=_cohort(session, codes), headers=auth), 422, field)
    assert "required_codes" in problem["detail"]
    assert runner == [] and store.list_cohorts(session, limit=10) == []


def test_the_schema_documents_both_forms(client):
    schema = client.get("/openapi.json").json()
    forms = schema["components"]["schemas"]["CohortCreate"]["properties"]["required_codes"]["items"]["oneOf"]
    assert forms[0]["type"] == "string" and "icd10:" in forms[0]["pattern"]
    code_ref = schema["components"]["schemas"]["CodeRef"]
    assert code_ref["properties"]["system"]["enum"] == ["icd9", "icd10"]


# ---- POST /datasets: code_system ------------------------------------------------------------------

def test_code_system_reads_a_mixed_mimic4_folder_in_one_system(client, auth):
    both = client.post("/datasets", json={"name": "m4", "format": "mimic4", "path": "mimic4-demo"}, headers=auth)
    assert both.status_code == 201, both.text
    assert both.json()["code_system"] is None and both.json()["stats"]["codes_by_system"] == {"icd9": 740, "icd10": 734}
    r = client.post("/datasets", json={"name": "m4-9", "format": "mimic4", "path": "mimic4-demo", "code_system": "icd9"},
                    headers=auth)
    assert r.status_code == 201, r.text
    data = r.json()
    assert data["code_system"] == "icd9"
    assert (data["stats"]["patients"], data["stats"]["codes_by_system"]) == (76, {"icd9": 740, "icd10": 0})
    assert client.get(r.headers["location"], headers=auth).json() == data


@pytest.fixture
def long_root(tmp_path):
    """A data root with long files: only codes valid in both systems, and a code valid in neither."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "ambiguous.csv").write_text("patient_id,visit_id,visit_time,code\np1,v1,1,E8809\np1,v2,2,V103\n")
    (root / "neither.csv").write_text("patient_id,visit_id,visit_time,code\np1,v1,1,4019\np1,v2,2,XYZ!!\n")
    return root


def test_code_system_settles_an_ambiguous_file(client_for, auth, session, long_root):
    client = client_for(data_root=long_root)
    r = client.post("/datasets", json={"name": "a", "format": "long", "path": "ambiguous.csv"}, headers=auth)
    problem = assert_problem(r, 422, "body.path")
    assert "line 2, column 'code': ambiguous code" in problem["errors"][0]["message"]
    assert "code_system column" in problem["errors"][0]["message"]
    assert str(long_root) not in r.text  # named relative to the data root
    r = client.post("/datasets", json={"name": "a", "format": "long", "path": "ambiguous.csv", "code_system": "icd10"},
                    headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["stats"]["codes_by_system"] == {"icd9": 0, "icd10": 2}


def test_bad_code_system_and_bad_codes_are_422(client_for, auth, session, long_root):
    client = client_for(data_root=long_root)
    before = len(store.list_datasets(session, limit=100))
    for system in ("icd11", "ICD-10", 10, ""):
        body = {"name": "a", "format": "long", "path": "ambiguous.csv", "code_system": system}
        assert_problem(client.post("/datasets", json=body, headers=auth), 422, "body.code_system")
    r = client.post("/datasets", json={"name": "n", "format": "long", "path": "neither.csv"}, headers=auth)
    problem = assert_problem(r, 422, "body.path")
    message = problem["errors"][0]["message"]
    assert "neither.csv, line 3, column 'code'" in message and "not an ICD-9-CM or ICD-10-CM diagnosis code" in message
    assert len(store.list_datasets(session, limit=100)) == before


def test_the_worker_reads_a_dataset_in_its_registered_system(shared_data, session):
    dataset = store.create_dataset(session, name="m4", format="mimic4", path="mimic4-demo", stats={"patients": 76},
                                   code_system="icd9")
    patients = load_dataset(shared_data, dataset)
    assert len(patients) == 76 and all(not c.startswith("icd10:") for p in patients for v in p.visits for c in v)
    unset = SimpleNamespace(path="mimic4-demo", format="mimic4", stats={"patients": 100})  # registered without one
    assert len(load_dataset(shared_data, unset)) == 100


# ---- GET /models/{id}: the systems a model knows ---------------------------------------------------

def test_models_list_the_code_systems_they_know(client, auth, session):
    old = make_model(session)  # registered before the systems were recorded: ICD-9-CM
    mixed = mixed_model(session)
    assert client.get(f"/models/{old}", headers=auth).json()["code_systems"] == ["icd9"]
    assert client.get(f"/models/{mixed}", headers=auth).json()["code_systems"] == ["icd9", "icd10"]
    listed = {m["id"]: m["code_systems"] for m in client.get("/models", headers=auth).json()["items"]}
    assert listed[old] == ["icd9"] and listed[mixed] == ["icd9", "icd10"]


def test_registration_reads_the_systems_of_the_checkpoints_vocabulary(tmp_path):
    """What worker/train_task.py records with the model: the systems of its vocab.json."""
    mixed, icd9 = tmp_path / "mixed", tmp_path / "icd9"
    for folder, visit in ((mixed, ["4019", "icd10:I10"]), (icd9, ["4019", "25000"])):
        folder.mkdir()
        Vocabulary.build([Patient(id="p", age=50.0, sex="F", visits=[visit])]).save(folder / "vocab.json")
    assert code_systems_of(mixed) == ["icd9", "icd10"]
    assert code_systems_of(icd9) == ["icd9"]  # an ICD-9 vocab.json has no code_systems field


def test_a_training_job_reads_its_datasets_system_and_registers_the_models(tmp_path, shared_data, one_thread):
    """The worker's train task end to end (SQLite, no broker): a MIMIC-IV data set registered as ICD-10-CM
    trains on its ICD-10-CM admissions only, and the model row records the systems of its vocabulary."""
    url = f"sqlite:///{tmp_path / 'promptehr.sqlite3'}"
    upgrade(url)
    ctx = make_context(Settings(database_url=url, promptehr_home=tmp_path, data_root=shared_data,
                                model_root=tmp_path / "models"), device="cpu")
    try:
        with ctx.session() as s:
            ds = store.create_dataset(s, name="m4-10", format="mimic4", path="mimic4-demo", stats={}, code_system="icd10")
            job = store.create_training_job(s, dataset_id=ds.id, preset="tiny", mode="hierarchical", epochs=1,
                                            options={"max_steps": 1})
        assert run_task(TRAIN, job.id, ctx) == "succeeded"
        with ctx.session() as s:
            model = store.get_model_of_training_job(s, job.id)
            assert model.config["code_systems"] == ["icd10"]
            vocab = json.loads((ctx.model_root / model.checkpoint_path / "vocab.json").read_text())
    finally:
        ctx.close()
    assert vocab["code_systems"] == ["icd10"] and all(c.startswith("icd10:") for c in vocab["codes"])
