"""Issue 15, defects 8 and 10: `Allow` on 405 lists every method of the path; the Host header is never
reflected (links are relative or on PROMPTEHR_PUBLIC_BASE_URL, no slash redirects); the OpenAPI
document lists the 400s and 503s the app gives, and every status it documents is one the app gives
(the statuses triggered here; 400 text/plain from the HTTP server is sent to the live server in
tests/test_reliability_fuzz.py)."""
from __future__ import annotations

import re
import socket
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from promptehr.service import store
from promptehr.service.app import create_app
from promptehr.service.auth import generate_key, hash_key
from promptehr.service.idempotency import _request_hash
from promptehr.service.models.base import JobStatus
from promptehr.service.schemas.cohorts import CohortCreate
from promptehr.service.schemas.datasets import DatasetCreate
from promptehr.service.schemas.training_jobs import TrainingJobCreate
from promptehr.service.settings import Settings
from tests.support.service import assert_problem, make_model

EVIL = "evil.example"
PROBED = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def admin(session) -> dict[str, str]:
    key = generate_key()
    store.create_api_key(session, name="http", key_hash=hash_key(key), prefix=key[:10], is_admin=True)
    return {"X-API-Key": key}


def operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def concrete(template: str, value: str = "nope") -> str:
    return re.sub(r"\{[^}]+\}", value, template)


def _matches(template: str, path: str) -> bool:
    pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                      for part in re.split(r"(\{[^}]+\})", template))
    return re.fullmatch(pattern, path) is not None


# ---- Allow

def test_405_allow_lists_every_method_the_path_answers(client):
    spec = client.get("/openapi.json").json()
    checked = 0
    for template in spec["paths"]:
        path = concrete(template)
        answered = {m.upper() for t, ops in spec["paths"].items() if _matches(t, path) for m in ops}
        for method in set(PROBED) - answered:
            r = client.request(method, path)
            assert_problem(r, 405)
            assert set(r.headers["allow"].split(", ")) == answered, (method, path, r.headers["allow"])
            checked += 1
    assert checked >= 40
    r = client.put("/cohorts")  # the reported case: GET and POST, not only POST
    assert r.headers["allow"] == "GET, POST" and "GET, POST" in r.json()["detail"]


# ---- Host

def _no_evil(response) -> None:
    where = (response.request.method, response.request.url.path, response.status_code)
    assert EVIL not in response.text, where
    assert all(EVIL not in value for value in response.headers.values()), (where, dict(response.headers))


def test_the_host_header_is_never_reflected(client, admin, session, runner):
    host = {**admin, "Host": EVIL}
    for i in range(3):
        store.create_dataset(session, name=f"d{i}", format="long", path="x", stats={})
    dataset_id = store.create_dataset(session, name="d", format="long", path="x", stats={}).id
    r = client.get("/datasets?limit=1", headers=host)
    assert r.json()["next"].startswith("/datasets?") and "cursor=" in r.json()["next"]
    _no_evil(r)
    r = client.post("/training-jobs", json={"dataset_id": dataset_id, "epochs": 1}, headers=host)
    assert r.status_code == 202 and r.headers["location"] == f"/training-jobs/{r.json()['id']}"
    _no_evil(r)
    # no redirect from a trailing slash: Starlette's names the Host
    for path in ("/datasets/", "/cohorts/", "/training-jobs/x/"):
        r = client.get(path, headers=host, follow_redirects=False)
        assert_problem(r, 404)
        assert "location" not in r.headers
        _no_evil(r)
    for method, path in [("GET", "/nowhere"), ("PUT", "/cohorts"), ("GET", "/datasets/nope"), ("GET", "/docs"),
                         ("GET", "/openapi.json"), ("GET", "/readyz"), ("GET", "/datasets?cursor=!!")]:
        _no_evil(client.request(method, path, headers=host))
    _no_evil(client.get("/datasets", headers={"Host": EVIL}))  # 401


def test_links_are_absolute_on_the_public_base_url(client_for, admin, session, shared_data, runner):
    client = client_for(data_root=shared_data, public_base_url="https://ehr.example.org/api")
    for i in range(2):
        dataset_id = store.create_dataset(session, name=f"d{i}", format="long", path="x", stats={}).id
    r = client.get("/datasets?limit=1", headers={**admin, "Host": EVIL})
    assert r.json()["next"].startswith("https://ehr.example.org/api/datasets?") and EVIL not in r.text
    assert client.get(r.json()["next"].removeprefix("https://ehr.example.org/api"), headers=admin).status_code == 200
    r = client.post("/training-jobs", json={"dataset_id": dataset_id, "epochs": 1}, headers={**admin, "Host": EVIL})
    assert r.headers["location"] == f"https://ehr.example.org/api/training-jobs/{r.json()['id']}"


def test_public_base_url_must_be_an_http_url():
    for bad in ("ehr.example.org", "ftp://x", "https://x/?q", "https://"):
        with pytest.raises(ValueError):
            Settings(public_base_url=bad)


# ---- the OpenAPI document's error answers

BODIES = {
    "/datasets": {"name": "d", "format": "mimic3", "path": "mimic3-demo"},
    "/training-jobs": {"dataset_id": "nope", "epochs": 1},
    "/cohorts": {"model_id": "nope", "n_patients": 5, "seed": 1, "age": {"distribution": "fixed", "value": 40},
                 "sex": {"female": 0.5}},
}
SCHEMAS = {"/datasets": DatasetCreate, "/training-jobs": TrainingJobCreate, "/cohorts": CohortCreate}


def test_every_operation_documents_its_400s_and_503s(client):
    spec = client.get("/openapi.json").json()
    for method, path, op in operations(spec):
        responses = op["responses"]
        content = responses["400"]["content"]
        assert "text/plain" in content, (method, path)  # the HTTP server's answer to a malformed request
        assert ("application/problem+json" in content) == ("requestBody" in op), (method, path)
        if op.get("security"):
            assert "503" in responses and "401" in responses, (method, path)
        if "422" in responses:
            assert list(responses["422"]["content"]) == ["application/problem+json"], (method, path)


def test_a_body_that_is_not_json_text_is_a_documented_400_problem(client, admin):
    spec = client.get("/openapi.json").json()
    body_ops = [(m, p) for m, p, op in operations(spec) if "requestBody" in op]
    assert len(body_ops) >= 3
    for method, path in body_ops:
        for raw in (b'{"name": "\xff"}', b"[" * 50_000):  # not UTF-8; nested past the parser's depth
            r = client.request(method, concrete(path), content=raw,
                               headers={**admin, "content-type": "application/json"})
            assert_problem(r, 400)


def _dead_database_client(tmp_path, shared_data) -> TestClient:
    with socket.socket() as s:  # a port nothing listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Settings(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/none",
                              promptehr_home=tmp_path / "dead", data_root=shared_data))
    return TestClient(app, raise_server_exceptions=False)


def _trigger(client, admin, method, path, op, status, dialect):
    """The request that makes `op` answer `status`, or None where this module has none for it."""
    has_path_params = "{" in path
    if status == 401 and op.get("security"):
        return client.request(method, concrete(path))
    if status == 404 and has_path_params:
        return client.request(method, concrete(path), headers=admin)
    if status == 422:
        query = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        if query:
            return client.request(method, concrete(path), params={query[0]: "!!"}, headers=admin)
        if "requestBody" in op:
            return client.request(method, concrete(path), json={}, headers=admin)
        if has_path_params and dialect == "postgresql":  # PostgreSQL text refuses NUL; SQLite: a 404
            return client.request(method, concrete(path, "a%00b"), headers=admin)
    return None


def test_every_documented_status_is_one_the_app_gives(client, admin, db_url, tmp_path, shared_data, client_for):
    spec = client.get("/openapi.json").json()
    dialect = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    small = client_for(data_root=shared_data, max_body_bytes=64)
    dead = _dead_database_client(tmp_path, shared_data)
    checked, untested = 0, []
    for method, path, op in operations(spec):
        for code in map(int, op["responses"]):
            if code < 400:
                continue
            if code == 413 and "requestBody" in op:
                r = small.request(method, concrete(path), json={"name": "x" * 100}, headers=admin)
            elif code == 503:
                r = dead.request(method, concrete(path), json=BODIES.get(path), headers=admin)
            else:
                r = _trigger(client, admin, method, path, op, code, dialect)
            if r is None:
                untested.append((method, path, code))
                continue
            assert_problem(r, code)
            checked += 1
    # 400: the body ones above, the HTTP server's in test_reliability_fuzz.py; 409s below; a 422 of an
    # id route exists on PostgreSQL only; other statuses (429 quotas, ...) have their own modules.
    print(f"documented error statuses triggered: {checked}; left to other modules: {untested}")
    assert checked >= 45, checked
    assert {c for _, _, c in untested} <= {400, 409, 422, 429}, untested
    dead.close()


def test_the_documented_409s_happen(client, admin, session, shared_data):
    spec = client.get("/openapi.json").json()
    documented = {(m, p) for m, p, op in operations(spec) if "409" in op["responses"]}
    key_id = store.get_api_key_by_hash(session, hash_key(admin["X-API-Key"])).id
    for path, schema in SCHEMAS.items():  # a retry while the first request with its key still runs
        body = {**BODIES[path], "dataset_id": "nope"} if path == "/training-jobs" else BODIES[path]
        store.reserve_idempotency_key(session, api_key_id=key_id, key=f"k{path}", endpoint=f"POST {path}",
                                      request_hash=_request_hash(schema.model_validate(body)), ttl=timedelta(hours=1))
        assert_problem(client.post(path, json=body, headers={**admin, "Idempotency-Key": f"k{path}"}), 409)
    job = store.create_training_job(session, dataset_id=make_dataset(session), preset="tiny", mode="hierarchical",
                                    epochs=1, seed=0, options={})
    job.status = JobStatus.succeeded.value
    session.commit()
    assert_problem(client.post(f"/training-jobs/{job.id}/cancel", headers=admin), 409)
    cohort, _ = store.create_cohort(session, model_id=make_model(session), n_patients=1, seed=0, spec={},
                                    shard_size=1)
    assert_problem(client.get(f"/cohorts/{cohort.id}/export", headers=admin), 409)
    triggered = {("POST", p) for p in SCHEMAS} | {("POST", "/training-jobs/{job_id}/cancel"),
                                                  ("GET", "/cohorts/{cohort_id}/export")}
    assert triggered <= documented


def make_dataset(session) -> str:
    return store.create_dataset(session, name="d", format="long", path="x", stats={}).id


def test_the_api_docs_need_no_network(client):
    """/docs loaded Swagger UI from a CDN (a blank page offline) and /redoc was a 404: both pages' scripts
    and styles are now served by the app itself."""
    import re

    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200, page
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', r.text)
        assert assets, r.text[:500]
        for url in assets:
            assert url.startswith("/"), url  # the app's own path, no other host
            served = client.get(url)
            assert served.status_code == 200 and len(served.content) > 10_000, url
