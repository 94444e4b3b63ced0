"""Helpers for the in-process API and store tests (tests/test_service_*.py): an RFC 9457 problem
assertion, a model row as a training job leaves it, and patient records to store."""
from __future__ import annotations

from promptehr.service import store


def assert_problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"]
    assert "Traceback" not in response.text
    if field is not None:
        fields = [e["field"] for e in body.get("errors", [])]
        assert any(f == field or f.startswith(field + ".") for f in fields), fields
    return body


def make_model(session, name: str = "m") -> str:
    """A dataset and a trained model row (no checkpoint), as a training job would leave them."""
    ds = store.create_dataset(session, name="d", format="mimic3", path="mimic3-demo", stats={"patients": 100})
    model = store.create_model(
        session, name=name, dataset_id=ds.id, checkpoint_path="/nowhere", manifest_sha256="0" * 64,
        config={"preset": "tiny"}, metrics={},
    )
    return model.id


def fake_patients(n: int, start: int = 0) -> list[dict]:
    return [
        {"patient_id": f"s{start + i}", "age": 40.0 + (start + i) % 50, "sex": "F" if i % 2 else "M",
         "visits": [["4019", "25000"], ["V5861"]] if i % 3 else [["E8889"]]}
        for i in range(n)
    ]
