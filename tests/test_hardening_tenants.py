"""Issue 15, defect 9: keys and tenants. Every key saw every resource, and a key could be neither
listed, revoked nor made to expire. Now each resource records its tenant, other tenants' keys get 404
on every route that names it (and do not see it in lists), an admin key sees all, and a revoked or
expired key is a 401. Both back ends, through the real app (client_for) and the real CLI."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from promptehr.cli.main import main
from promptehr.service import migrate, store
from promptehr.service.auth import hash_key
from promptehr.service.db import make_engine, make_sessionmaker
from promptehr.service.models import ApiKey, CohortShard, Dataset
from promptehr.service.settings import get_settings
from tests import conftest
from tests.conftest import tenant_key
from tests.support.service import assert_problem, fake_patients

AGE = {"distribution": "normal", "mean": 70, "sd": 10, "min": 18, "max": 90}
REPORT = {"schema_version": 1, "fidelity": {}, "validity": {}, "privacy": {}, "utility": {}}


def cohort_body(model_id: str, n: int) -> dict:
    return {"model_id": model_id, "n_patients": n, "seed": 1, "age": AGE, "sex": {"female": 0.5}}


def _finish_cohort(session, cohort_id: str) -> str:
    """Generate (fake patients) and evaluate the cohort as the workers would; returns its report id."""
    report_id = None
    shards = session.scalars(sa.select(CohortShard).where(CohortShard.cohort_id == cohort_id)
                             .order_by(CohortShard.shard_index)).all()
    for row in shards:
        assert store.claim_job(session, "generate", row.id, "w")
        store.insert_patients(session, cohort_id, row.start_index, fake_patients(row.count, row.start_index))
        report_id = store.mark_succeeded(session, "generate", row.id, worker_id="w") or report_id
    assert store.claim_job(session, "evaluate", report_id, "w")
    store.save_report(session, report_id, content=REPORT, html="<!doctype html><title>r</title>")
    store.mark_succeeded(session, "evaluate", report_id, worker_id="w")
    return report_id


@pytest.fixture
def world(client_for, shared_data, session, runner):
    """Tenant "a"'s dataset, training job, model, cohort and report, all made through the API (the
    model as a training job registers it); keys of "a", "b" and an admin."""
    client = client_for(data_root=shared_data, cohort_shard_size=5)
    a, b, admin = tenant_key(session, "a"), tenant_key(session, "b"), tenant_key(session, "ops", admin=True)
    r = client.post("/datasets", json={"name": "demo", "format": "mimic3", "path": "mimic3-demo"}, headers=a)
    assert r.status_code == 201, r.text
    ids = {"dataset_id": r.json()["id"]}
    r = client.post("/training-jobs", json={"dataset_id": ids["dataset_id"], "preset": "tiny", "epochs": 1}, headers=a)
    assert r.status_code == 202, r.text
    ids["job_id"] = r.json()["id"]
    model = store.register_trained_model(session, training_job_id=ids["job_id"], name="m",
                                         dataset_id=ids["dataset_id"], checkpoint_path="/nowhere",
                                         manifest_sha256="0" * 64, config={"preset": "tiny"}, metrics={})
    ids["model_id"] = model.id
    r = client.post("/cohorts", json=cohort_body(model.id, 8), headers=a)
    assert r.status_code == 202, r.text
    ids["cohort_id"] = r.json()["id"]
    ids["report_id"] = _finish_cohort(session, ids["cohort_id"])
    return client, ids, {"a": a, "b": b, "admin": admin}


OWNER_READS = ["/datasets/{dataset_id}", "/training-jobs/{job_id}", "/models/{model_id}", "/cohorts/{cohort_id}",
               "/cohorts/{cohort_id}/patients", "/cohorts/{cohort_id}/export", "/reports/{report_id}",
               "/reports/{report_id}.html"]
LISTS = {"/datasets": "dataset_id", "/training-jobs": "job_id", "/models": "model_id", "/cohorts": "cohort_id"}


def test_every_resource_records_its_tenant(world, session):
    _, ids, _ = world
    rows = [store.get_dataset(session, ids["dataset_id"]), store.get_training_job(session, ids["job_id"]),
            store.get_model(session, ids["model_id"]), store.get_cohort(session, ids["cohort_id"]),
            store.get_report(session, ids["report_id"])]
    assert [row.tenant for row in rows] == ["a"] * 5


def test_other_tenants_get_404_on_every_route_that_names_a_resource(world, session):
    """Every route of the app with a path parameter, whatever its method (those added later too), is
    a 404 problem for another tenant's key, and leaves the resource as it was."""
    client, ids, keys = world
    paths = client.get("/openapi.json").json()["paths"]
    routes = [(method.upper(), path) for path, ops in paths.items() if "{" in path for method in ops]
    assert len(routes) >= len(OWNER_READS) + 1  # the cancel route, at least
    for method, path in routes:
        params = re.findall(r"{(\w+)}", path)
        assert set(params) <= set(ids), f"{method} {path}: a parameter this test does not know: {params}"
        r = client.request(method, path.format(**ids), headers=keys["b"])
        assert_problem(r, 404)
    assert store.get_training_job(session, ids["job_id"]).cancel_requested is False  # b's cancel did nothing
    for path in OWNER_READS:  # the owner and an admin still read them all
        for who in ("a", "admin"):
            r = client.get(path.format(**ids), headers=keys[who])
            assert r.status_code == 200, (who, path, r.text)


def test_lists_show_a_tenant_only_its_own(world):
    client, ids, keys = world
    for path, id_name in LISTS.items():
        seen = {who: [item["id"] for item in client.get(path, headers=keys[who]).json()["items"]]
                for who in ("a", "b", "admin")}
        assert seen["a"] == [ids[id_name]] and seen["b"] == [] and ids[id_name] in seen["admin"], (path, seen)


def test_another_tenants_dataset_or_model_cannot_be_used(world):
    """A training job on another tenant's dataset, a cohort of another tenant's model: 422 "no such"
    (as for an id that does not exist), never a job reading what the key may not see."""
    client, ids, keys = world
    r = client.post("/training-jobs", json={"dataset_id": ids["dataset_id"], "preset": "tiny", "epochs": 1},
                    headers=keys["b"])
    assert_problem(r, 422, "body.dataset_id")
    r = client.post("/cohorts", json=cohort_body(ids["model_id"], 5), headers=keys["b"])
    assert_problem(r, 422, "body.model_id")
    r = client.post("/cohorts", json=cohort_body(ids["model_id"], 5), headers=keys["admin"])
    assert r.status_code == 202, r.text  # an admin may use any tenant's model; the cohort is its own
    assert r.json()["id"] not in [c["id"] for c in client.get("/cohorts", headers=keys["a"]).json()["items"]]


def test_rows_without_a_tenant_are_seen_by_admin_keys_only(client, session):
    old = store.create_dataset(session, name="before tenants", format="mimic3", path="mimic3-demo", stats={})
    assert old.tenant is None
    assert_problem(client.get(f"/datasets/{old.id}", headers=tenant_key(session, "a")), 404)
    assert client.get(f"/datasets/{old.id}", headers=tenant_key(session, "x", admin=True)).status_code == 200


def test_revoked_and_expired_keys_are_401(client, session):
    now = datetime.now(UTC)
    expired = tenant_key(session, "a", expires_at=now - timedelta(seconds=1))
    later = tenant_key(session, "a", expires_at=now + timedelta(days=1))
    assert_problem(client.get("/datasets", headers=expired), 401)
    assert client.get("/datasets", headers=later).status_code == 200
    record = store.get_api_key_by_hash(session, hash_key(later["X-API-Key"]))
    store.revoke_api_key(session, record.id)
    body = assert_problem(client.get("/datasets", headers=later), 401)
    assert "revoked" in body["detail"]
    first = store.get_api_key(session, record.id).revoked_at
    assert store.revoke_api_key(session, record.id).revoked_at == first  # revoking again keeps the time


# ---- the CLI: create (stdout: the key only), list, revoke

@pytest.fixture
def cli_env(monkeypatch, db_url):
    """The CLI on the suite's database (its rows are committed: the keys made carry unique names)."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    get_settings.cache_clear()
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()
    get_settings.cache_clear()


def test_apikey_create_list_revoke(cli_env, capsys):
    tag = datetime.now(UTC).strftime("%H%M%S%f")
    assert main(["apikey", "create", "--name", f"ci-{tag}", "--tenant", f"t-{tag}", "--expires-in-days", "30"]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"pehr_[\w-]{40,}\n", out), out  # the key and nothing else: `key=$(...)` works
    key = out.strip()
    assert "shown once" in err and f"t-{tag}" in err
    assert main(["apikey", "create", "--name", f"ops-{tag}", "--admin", "--expires", "2999-01-31"]) == 0
    admin_out = capsys.readouterr().out.strip()

    assert main(["apikey", "list"]) == 0
    listing = capsys.readouterr().out
    header, *lines = listing.splitlines()
    assert header.split() == ["id", "name", "prefix", "tenant", "admin", "created", "expires", "revoked"]
    assert key not in listing and admin_out not in listing  # never the keys themselves
    mine = next(line.split() for line in lines if f"ci-{tag}" in line)
    ops = next(line.split() for line in lines if f"ops-{tag}" in line)
    assert mine[2] == key[:10] and mine[3] == f"t-{tag}" and mine[4] == "no" and mine[7] == "-"
    assert ops[3] == f"ops-{tag}" and ops[4] == "yes" and ops[6] == "2999-01-31T00:00:00Z"

    assert main(["apikey", "revoke", mine[0]]) == 0
    assert "revoked at" in capsys.readouterr().out
    with cli_env() as s:
        assert store.get_api_key_by_hash(s, hash_key(key)) is None  # refused from now on
        assert store.get_api_key_by_hash(s, hash_key(admin_out)).is_admin
        s.execute(sa.delete(ApiKey).where(ApiKey.name.in_([f"ci-{tag}", f"ops-{tag}"])))
        s.commit()


@pytest.mark.parametrize("argv, message", [
    (["apikey", "revoke", "no-such-id"], "no API key"),
    (["apikey", "create", "--name", "x", "--expires", "2001-01-01"], "not in the future"),
    (["apikey", "create", "--name", "x", "--expires", "next week"], "not an ISO date"),
    (["apikey", "create", "--name", "x", "--expires-in-days", "0"], "--expires-in-days"),
    (["apikey", "create", "--name", "x", "--tenant", " "], "--tenant"),
])
def test_apikey_bad_input_is_one_line_and_exit_2(cli_env, capsys, argv, message):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and len(err.strip().splitlines()) == 1 and out == ""


# ---- the migration: existing rows

@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.sqlite3'}"
        return
    gen = conftest.postgres_url.__wrapped__()  # a database of its own: it is migrated up and down
    yield next(gen)
    with pytest.raises(StopIteration):
        next(gen)


def test_migration_gives_old_keys_their_name_as_tenant_and_old_rows_no_tenant(fresh_url):
    migrate.upgrade(fresh_url, "0001")
    engine = make_engine(fresh_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO api_keys (id, name, key_hash, prefix, created_at) "
                                 "VALUES ('k1', 'alice', :h, 'pehr_abcde', CURRENT_TIMESTAMP)"), {"h": "0" * 64})
            conn.execute(sa.text("INSERT INTO datasets (id, name, format, path, stats, created_at) "
                                 "VALUES ('d1', 'old', 'mimic3', 'x', '{}', CURRENT_TIMESTAMP)"))
        migrate.upgrade(fresh_url)
        with make_sessionmaker(engine)() as s:
            key = s.get(ApiKey, "k1")
            assert (key.tenant, key.is_admin, key.expires_at) == ("alice", False, None)
            assert s.get(Dataset, "d1").tenant is None
            assert store.get_dataset(s, "d1", tenant="alice") is None  # only admins (no filter) see it
            assert store.get_dataset(s, "d1", tenant=None) is not None
        migrate.downgrade(fresh_url, "0001")  # and back: the 0001 schema, its rows kept
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT name FROM api_keys")).scalar_one() == "alice"
            assert "tenant" not in {c["name"] for c in sa.inspect(conn).get_columns("datasets")}
    finally:
        engine.dispose()
