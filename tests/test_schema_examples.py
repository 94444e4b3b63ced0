"""Every request schema of the OpenAPI document has examples, and each example is a body the API takes."""
from __future__ import annotations

import copy

import pytest

from promptehr.service.app import create_app
from promptehr.service.schemas import cohorts, datasets, training_jobs
from promptehr.service.settings import Settings

from tests.support.service import make_model

# Every pydantic model a request body may hold, by its OpenAPI component name.
MODELS = {m.__name__: m for m in (
    cohorts.CohortCreate, cohorts.CodeRef, cohorts.NormalAge, cohorts.HistogramAge, cohorts.FixedAge,
    cohorts.SexSpec, cohorts.Sampling, datasets.DatasetCreate, training_jobs.TrainingJobCreate)}


def _refs(node) -> set[str]:
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        found = {ref.rsplit("/", 1)[1]} if ref.startswith("#/components/schemas/") else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def request_schemas(spec: dict) -> set[str]:
    """The component schemas reachable from a request body (or a query parameter), transitively."""
    schemas = spec["components"]["schemas"]
    todo = set()
    for ops in spec["paths"].values():
        for op in ops.values():
            todo |= _refs(op.get("requestBody", {}))
            todo |= _refs([p for p in op.get("parameters", []) if p.get("in") == "query"])
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo |= _refs(schemas[name]) - seen
    return seen


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    return create_app(Settings(promptehr_home=tmp_path_factory.mktemp("home"))).openapi()


def test_every_request_schema_has_examples_that_validate(spec):
    names = request_schemas(spec)
    # The walk finds the three bodies and what they hold; a schema it finds that MODELS lacks fails below.
    assert {"CohortCreate", "DatasetCreate", "TrainingJobCreate", "NormalAge", "CodeRef"} <= names
    missing = sorted(n for n in names if not spec["components"]["schemas"][n].get("examples"))
    assert not missing, f"request schemas without examples: {missing}"
    for name in sorted(names):
        assert name in MODELS, f"{name}: a request schema this test does not know"
        for example in spec["components"]["schemas"][name]["examples"]:
            MODELS[name].model_validate(example)  # strict models: raises on any wrong field


def _examples(model) -> list[dict]:
    return copy.deepcopy(model.model_json_schema()["examples"])


def test_dataset_examples_register(client, auth):
    for body in _examples(datasets.DatasetCreate):
        r = client.post("/datasets", json=body, headers=auth)
        assert r.status_code == 201, (body, r.text)
        assert r.json()["stats"]["patients"] > 0


def test_training_job_examples_are_queued(client, auth, runner):
    dataset = client.post("/datasets", json=_examples(datasets.DatasetCreate)[0], headers=auth).json()
    for body in _examples(training_jobs.TrainingJobCreate):
        r = client.post("/training-jobs", json={**body, "dataset_id": dataset["id"]}, headers=auth)
        assert r.status_code == 202, (body, r.text)
    assert len(runner) == len(_examples(training_jobs.TrainingJobCreate))


def test_cohort_examples_are_queued(client, auth, session, runner):
    model_id = make_model(session)
    for body in _examples(cohorts.CohortCreate):
        r = client.post("/cohorts", json={**body, "model_id": model_id}, headers=auth)
        assert r.status_code == 202, (body, r.text)
        assert r.json()["n_patients"] == body["n_patients"]


def test_cohort_example_with_an_unknown_model_fails_on_model_id_only(client, auth):
    r = client.post("/cohorts", json=_examples(cohorts.CohortCreate)[0], headers=auth)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["body.model_id"]
