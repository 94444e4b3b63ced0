"""Cohorts: request one (sharded generation jobs), read it, page its patients, export it streamed."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from service import export, store
from service.deps import ApiKeyDep, SessionDep, SettingsDep
from service.idempotency import idempotent_create
from service.models.base import JobStatus
from service.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    decode_time_cursor,
    effective_limit,
    encode_cursor,
    page_body,
    time_page,
)
from service.problems import Problem, field_error, validation_problem
from service.routes.training_jobs import enqueue_or_fail
from service.schemas.cohorts import CohortCreate, CohortPatientPublic, CohortPublic
from service.schemas.common import problem_responses

router = APIRouter(prefix="/cohorts", tags=["cohorts"])


def to_public(session, cohort, *, just_created: bool = False) -> dict:
    """The cohort as the API shows it; progress counts the patients stored (none yet when
    `just_created`: the answer to POST, which then needs no query)."""
    data = CohortPublic.model_validate(cohort).model_dump(mode="json")
    if cohort.status == JobStatus.succeeded.value:
        data["progress"] = {"done": cohort.n_patients, "total": cohort.n_patients, "unit": "patients"}
    elif just_created:
        data["progress"] = {"done": 0, "total": cohort.n_patients, "unit": "patients"}
    else:
        data["progress"] = store.cohort_progress(session, cohort)
    return data


def _get(session, cohort_id: str):
    cohort = store.get_cohort(session, cohort_id)
    if cohort is None:
        raise Problem(404, f"No cohort {cohort_id}.", type="not-found")
    return cohort


@router.post(
    "",
    status_code=202,
    response_model=CohortPublic,
    summary="Generate a synthetic cohort",
    responses=problem_responses(401, 409, 413, 422, 503),
)
def create_cohort(request: Request, body: CohortCreate, session: SessionDep, settings: SettingsDep, api_key: ApiKeyDep):
    if body.n_patients > settings.max_cohort_patients:
        raise validation_problem(
            [field_error(["body", "n_patients"], f"must be at most {settings.max_cohort_patients}")]
        )

    def create():
        # On PostgreSQL the model check, the cohort and its shards are one transaction (one COMMIT);
        # the rows are committed as queued before any message is sent, so a message lost after this
        # point is resent by the worker's sweep of queued jobs.
        if store.get_model(session, body.model_id) is None:
            raise validation_problem([field_error(["body", "model_id"], "no such model")])
        cohort, shards = store.create_cohort(
            session, model_id=body.model_id, n_patients=body.n_patients, seed=body.seed, spec=body.spec(),
            shard_size=settings.cohort_shard_size,
        )
        for shard in shards:
            enqueue_or_fail(session, settings, "generate", shard.id)
        return 202, to_public(session, cohort, just_created=True), \
            str(request.url_for("get_cohort", cohort_id=cohort.id))

    return idempotent_create(request, session, settings, api_key, body, create)


@router.get("", response_model=Page[CohortPublic], summary="List cohorts", responses=problem_responses(401, 422))
def list_cohorts(
    request: Request, session: SessionDep, settings: SettingsDep, _: ApiKeyDep,
    limit: LimitQuery = None, cursor: CursorQuery = None,
):
    n = effective_limit(limit, settings)
    rows = store.list_cohorts(session, limit=n + 1, after=decode_time_cursor(cursor))
    return time_page(request, rows, n, lambda c: to_public(session, c))


@router.get("/{cohort_id}", response_model=CohortPublic, summary="A cohort", responses=problem_responses(401, 404))
def get_cohort(cohort_id: str, session: SessionDep, _: ApiKeyDep):
    return to_public(session, _get(session, cohort_id))


@router.get(
    "/{cohort_id}/patients",
    response_model=Page[CohortPatientPublic],
    summary="Page through a cohort's patients",
    responses=problem_responses(401, 404, 422),
)
def list_cohort_patients(
    request: Request, cohort_id: str, session: SessionDep, settings: SettingsDep, _: ApiKeyDep,
    limit: LimitQuery = None, cursor: CursorQuery = None,
):
    _get(session, cohort_id)
    n = effective_limit(limit, settings)
    after = -1
    if cursor is not None:
        after = decode_cursor(cursor)
        if not isinstance(after, int):
            raise validation_problem([field_error(["query", "cursor"], "not a cursor from this API")])
    rows = store.list_patients(session, cohort_id, after_index=after, limit=n + 1)
    more = len(rows) > n
    rows = rows[:n]
    items = [{"index": r.index, **r.patient} for r in rows]
    return page_body(request, items, encode_cursor(rows[-1].index) if more else None, n)


@router.get(
    "/{cohort_id}/export",
    summary="Download a cohort (streamed)",
    description="`jsonl`: one patient per line; `csv`: long format (patient_id, visit_id, visit_time, code, "
    "age, sex); `mimic3`: a zip of DIAGNOSES_ICD.csv, PATIENTS.csv and ADMISSIONS.csv. The same bytes as "
    "`promptehr generate --format` writes for the same model, size, seed and spec. Available once "
    "every shard has been generated.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}, "application/zip": {}}},
        **problem_responses(401, 404, 409, 422),
    },
)
def export_cohort(
    cohort_id: str, session: SessionDep, settings: SettingsDep, _: ApiKeyDep,
    format: Annotated[Literal["jsonl", "csv", "mimic3"], Query()] = "jsonl",
):
    cohort = _get(session, cohort_id)
    if cohort.shards_done < cohort.n_shards:
        raise Problem(409, f"The cohort is not generated yet (status {cohort.status}).", type="cohort-not-ready")
    media_type, ext = export.FORMATS[format]
    return StreamingResponse(
        export.stream(format, session, cohort_id, settings.export_chunk_rows),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="cohort-{cohort_id}.{ext}"'},
    )
