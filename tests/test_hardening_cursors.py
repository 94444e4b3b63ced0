"""Issue 15, defect 2: crafted cursors gave 500s. Every cursor the API did not write in exactly its own
form is a 422 problem naming query.cursor, on SQLite and PostgreSQL (db_url); the cursors it writes
still page through every row."""
from __future__ import annotations

import base64
import json
import string
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptehr.service import store
from promptehr.service.auth import generate_key, hash_key
from tests.support.service import assert_problem, fake_patients, make_model

TIME_ROUTES = ["/datasets", "/models", "/cohorts", "/training-jobs"]


def enc(value) -> str:
    """A cursor the way a client would craft one: base64url of any JSON."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.fixture
def admin(session) -> dict[str, str]:
    """An admin key: it sees the rows the store makes here, which belong to no tenant."""
    key = generate_key()
    store.create_api_key(session, name="cursors", key_hash=hash_key(key), prefix=key[:10], is_admin=True)
    return {"X-API-Key": key}


@pytest.fixture
def cohort_id(session) -> str:
    cohort, _ = store.create_cohort(session, model_id=make_model(session), n_patients=5, seed=0, spec={},
                                    shard_size=5)
    store.insert_patients(session, cohort.id, 0, fake_patients(5))
    return cohort.id


def routes(cohort_id: str) -> list[str]:
    return [*TIME_ROUTES, f"/cohorts/{cohort_id}/patients"]


def test_the_reported_cursors_are_422_not_500(client, admin, cohort_id):
    patients = f"/cohorts/{cohort_id}/patients"
    reported = [(patients, "dHJ1ZQ"), (patients, enc(2**63))]  # base64 of `true`; 2^63 (SQLite overflow)
    reported += [(route, enc(["0001-01-01T00:00:00+14:00", "x"])) for route in TIME_ROUTES]  # no UTC value
    for path, cursor in reported:
        assert_problem(client.get(path, params={"cursor": cursor}, headers=admin), 422, "query.cursor")


NOW = "2026-01-02T03:04:05.123456+00:00"
BAD_TIME_CURSORS = [
    enc(True), enc(None), enc(5), enc("x"), enc({}), enc([]), enc([NOW]), enc([NOW, "x", "y"]),
    enc([NOW, 5]), enc([NOW, True]), enc([NOW, ""]), enc([NOW, "a\x00b"]), enc([NOW, "x" * 37]), enc([NOW, "é"]),
    enc(["2026-01-02T03:04:05", "x"]),                    # no offset
    enc(["2026-01-02T03:04:05Z", "x"]),                   # another spelling of UTC than the API's
    enc(["2026-01-02T05:04:05+02:00", "x"]),              # an offset the API never writes
    enc(["9999-12-31T23:59:59-14:00", "x"]),              # past year 9999 in UTC
    enc(["2026-13-02T03:04:05+00:00", "x"]), enc([1767323045, "x"]), enc([NOW.replace("+", " "), "x"]),
    base64.urlsafe_b64encode(json.dumps([NOW, "x"], separators=(",", ":")).encode()).decode(),  # padded
    enc([NOW, "x"]).replace("-", "+"), "!!!!", "é", "", "=",
]
BAD_INDEX_CURSORS = [
    "dHJ1ZQ", enc(False), enc(None), enc(-1), enc(-2**63), enc(2**31), enc(2**63), enc(2**64), enc(10**400),
    enc(1.0), enc(1e308), enc("3"), enc([3]), enc({"i": 3}), " " + enc(3), enc(3) + "=", "MDM", "Kz M",
]


def test_tampered_time_cursors_are_422(client, admin):
    for route in TIME_ROUTES:
        for cursor in BAD_TIME_CURSORS:
            response = client.get(route, params={"cursor": cursor}, headers=admin)
            assert_problem(response, 422, "query.cursor")


def test_tampered_index_cursors_are_422(client, admin, cohort_id):
    for cursor in BAD_INDEX_CURSORS:
        response = client.get(f"/cohorts/{cohort_id}/patients", params={"cursor": cursor}, headers=admin)
        assert_problem(response, 422, "query.cursor")


def _follow(client, headers, url: str) -> tuple[list, int]:
    seen, pages = [], 0
    while url:
        r = client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        pages += 1
        seen += r.json()["items"]
        url = r.json().get("next")
    return seen, pages


def test_the_cursors_the_api_writes_page_through_every_row(client, admin, session, cohort_id):
    ids = [store.create_dataset(session, name=f"d{i}", format="long", path="x", stats={}).id for i in range(5)]
    seen, pages = _follow(client, admin, "/datasets?limit=2")  # with the dataset of the cohort's model
    assert [d["id"] for d in seen][1:] == ids and pages == 3
    seen, pages = _follow(client, admin, f"/cohorts/{cohort_id}/patients?limit=2")
    assert [p["index"] for p in seen] == [0, 1, 2, 3, 4] and pages == 3


def test_a_well_formed_cursor_is_a_position_in_the_ordering(client, admin, session):
    """Strict validation, not signing: a cursor in the API's own form that it did not write names a
    place in the same (created_at, id) order, as paging would have; nothing more."""
    rows = [store.create_dataset(session, name=f"d{i}", format="long", path="x", stats={}) for i in range(3)]
    first = rows[0]
    cursor = base64.urlsafe_b64encode(json.dumps([first.created_at.isoformat(), first.id], separators=(",", ":"))
                                      .encode()).decode().rstrip("=")
    r = client.get("/datasets", params={"cursor": cursor}, headers=admin)
    assert r.status_code == 200 and [d["id"] for d in r.json()["items"]] == [row.id for row in rows[1:]]


# ---- fuzzed cursors: any JSON, JSON-shaped keys with odd dates and ids, any base64 text

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
offsets = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=14)),
                           timezone(timedelta(minutes=30))])
dates = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59), timezones=offsets)
time_keys = st.tuples(dates.map(datetime.isoformat) | st.text(max_size=40), st.text(max_size=40)).map(list)
cursors = (st.one_of(json_values, time_keys, st.integers(min_value=-2**70, max_value=2**70)).map(enc)
           | st.text(alphabet=string.ascii_letters + string.digits + "-_=+/ ", max_size=60))


@pytest.mark.slow  # 60 examples x 5 routes: 12-15 s a back end on the shared 2-core machine
@given(cursor=cursors)
@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_fuzzed_cursors_are_a_page_or_a_422_naming_the_cursor(client, admin, cohort_id, cursor):
    for route in routes(cohort_id):
        response = client.get(route, params={"cursor": cursor}, headers=admin)
        assert response.status_code in (200, 422), (route, cursor, response.status_code, response.text[:300])
        if response.status_code == 422:
            assert_problem(response, 422, "query.cursor")
