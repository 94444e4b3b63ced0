"""POST /datasets: the data root is a jail; stats come from the model.data loaders."""
from __future__ import annotations

import os

import pytest

from promptehr.service import store
from promptehr.service.models import Dataset
from tests.support.service import assert_problem


def _count(session) -> int:
    return len(store.list_datasets(session, limit=1000))


def test_register_desynpuf_sample_1(client, auth, session):
    body = {"name": "desynpuf-1", "format": "desynpuf", "path": "desynpuf-sample/1-sample-10000"}
    r = client.post("/datasets", json=body, headers=auth)
    assert r.status_code == 201, r.text
    data = r.json()
    assert data["stats"]["patients"] == 3268
    assert {"patients", "visits", "codes"} <= set(data["stats"])
    assert (data["name"], data["format"], data["path"]) == ("desynpuf-1", "desynpuf", body["path"])
    assert r.headers["location"].endswith(f"/datasets/{data['id']}")
    got = client.get(r.headers["location"], headers=auth)
    assert got.status_code == 200 and got.json() == data


@pytest.fixture
def jail(tmp_path, shared_data):
    """A data root with a MIMIC-III copy in real/, a symlink alias/ -> real/ (inside) and a symlink
    escape/ -> a folder outside the root holding the same files."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    for folder in (root / "real", outside):
        folder.mkdir(parents=True)
        for f in ("PATIENTS.csv", "ADMISSIONS.csv", "DIAGNOSES_ICD.csv"):
            (folder / f).write_bytes((shared_data / "mimic3-demo" / f).read_bytes())
    os.symlink(root / "real", root / "alias")
    os.symlink(outside, root / "escape")
    os.symlink(root / "loop", root / "loop")
    return root, outside


@pytest.mark.parametrize(
    "path",
    ["..", "../outside", "real/../../outside", "escape", "escape/", "/etc", "ABSOLUTE", "missing", "loop",
     "x" * 4000, "real/\x00"],
)
def test_paths_escaping_the_data_root_are_refused(client_for, session, auth, jail, path):
    root, _ = jail
    client = client_for(data_root=root / "real" / "..")  # a root given with ".." is resolved too
    if path == "ABSOLUTE":
        path = str(root / "real")  # absolute, even inside the root: refused
    before = _count(session)
    r = client.post("/datasets", json={"name": "x", "format": "mimic3", "path": path}, headers=auth)
    assert_problem(r, 422, "body.path")
    assert _count(session) == before


@pytest.mark.parametrize("path", ["real", "alias", "real/../alias/"])
def test_paths_resolving_inside_the_data_root_are_fine(client_for, auth, jail, path):
    root, _ = jail
    client = client_for(data_root=root)
    r = client.post("/datasets", json={"name": "x", "format": "mimic3", "path": path}, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["stats"]["patients"] == 100


def test_wrong_format_or_unreadable_data_is_a_422(client, auth, session):
    before = _count(session)
    r = client.post("/datasets", json={"name": "x", "format": "csv", "path": "mimic3-demo"}, headers=auth)
    assert_problem(r, 422, "body.format")
    r = client.post("/datasets", json={"name": "x", "format": "desynpuf", "path": "mimic3-demo"}, headers=auth)
    assert_problem(r, 422, "body.path")
    assert _count(session) == before


def test_unreadable_data_is_named_relative_to_the_data_root(client_for, auth, session, jail):
    root, _ = jail
    bad = root / "real" / "DIAGNOSES_ICD.csv"
    bad.write_text(bad.read_text().replace("\n", "\nXYZ!!,", 1))  # a malformed second line
    client = client_for(data_root=root)
    before = _count(session)
    r = client.post("/datasets", json={"name": "x", "format": "mimic3", "path": "real"}, headers=auth)
    assert_problem(r, 422, "body.path")
    assert "real/DIAGNOSES_ICD.csv" in r.text and str(root) not in r.text, r.text
    assert _count(session) == before


def test_dataset_row_keeps_the_relative_path(client, auth, session):
    r = client.post("/datasets", json={"name": "m", "format": "mimic3", "path": "mimic3-demo"}, headers=auth)
    assert r.status_code == 201
    assert session.get(Dataset, r.json()["id"]).path == "mimic3-demo"
