"""Cohorts: request one (sharded generation jobs), read it, page its patients, export it streamed,
cancel it, delete it."""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from promptehr.model import codes
from promptehr.service import export, store
from promptehr.service.deps import ApiKeyDep, SessionDep, SettingsDep, TenantDep
from promptehr.service.idempotency import idempotent_create
from promptehr.service.links import link_for
from promptehr.service.models.base import JobStatus
from promptehr.service.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_index_cursor,
    decode_time_cursor,
    effective_limit,
    encode_cursor,
    page_body,
    time_page,
)
from promptehr.service.problems import Problem, field_error, validation_problem
from promptehr.service.quotas import max_cohort_patients, quota_limits
from promptehr.service.routes.training_jobs import enqueue_or_fail
from promptehr.service.schemas.cohorts import CohortCreate, CohortPatientPublic, CohortPublic
from promptehr.service.schemas.common import problem_responses
from promptehr.service.schemas.models import known_systems
from promptehr.service.spec_checks import check_runnable

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


def check_code_systems(required: list[str], known: list[str]) -> None:
    """A 422 naming each required code of a system the model was not trained on: its job would fail.
    (Whether the model knows the code itself is its vocabulary's to say: service/spec_checks.py.)"""
    errors = [field_error(["body", "required_codes", i], f"{codes.label(c)}: the model knows "
                          f"{' and '.join(codes.NAMES[s] for s in known)} codes only")
              for i, c in enumerate(required) if codes.system_of(c) not in known]
    if errors:
        raise validation_problem(errors)


def _get(session, cohort_id: str, *, tenant: str | None):
    cohort = store.get_cohort(session, cohort_id, tenant=tenant)
    if cohort is None:
        raise Problem(404, f"No cohort {cohort_id}.", type="not-found")
    return cohort


@router.post(
    "",
    status_code=202,
    response_model=CohortPublic,
    summary="Generate a synthetic cohort",
    responses=problem_responses(401, 409, 413, 422, 429, 503),
)
def create_cohort(request: Request, body: CohortCreate, session: SessionDep, settings: SettingsDep, api_key: ApiKeyDep):
    if body.n_patients > max_cohort_patients(settings):
        raise validation_problem(
            [field_error(["body", "n_patients"], f"must be at most {max_cohort_patients(settings)}")]
        )

    def create():
        # On PostgreSQL the model check, the cohort and its shards are one transaction (one COMMIT);
        # the rows are committed as queued before any message is sent, so a message lost after this
        # point is resent by the worker's sweep of queued jobs.
        model = store.get_model(session, body.model_id, tenant=api_key.tenant_filter)
        if model is None:
            raise validation_problem([field_error(["body", "model_id"], "no such model")])
        spec = body.spec()
        check_code_systems(spec["required_codes"], known_systems(model.config))
        check_runnable(spec, model, settings.model_root)  # vocabulary, sex/age rules: what the worker needs
        cohort, shards = store.create_cohort(
            session, model_id=body.model_id, n_patients=body.n_patients, seed=body.seed, spec=spec,
            shard_size=settings.cohort_shard_size, tenant=api_key.tenant, quota=quota_limits(settings),
        )
        for shard in shards:
            enqueue_or_fail(session, settings, "generate", shard.id)
        return 202, to_public(session, cohort, just_created=True), \
            link_for(request, "get_cohort", cohort_id=cohort.id)

    return idempotent_create(request, session, settings, api_key, body, create)


@router.get("", response_model=Page[CohortPublic], summary="List cohorts", responses=problem_responses(401, 422))
def list_cohorts(
    request: Request, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
    limit: LimitQuery = None, cursor: CursorQuery = None,
):
    n = effective_limit(limit, settings)
    rows = store.list_cohorts(session, limit=n + 1, after=decode_time_cursor(cursor), tenant=tenant)
    return time_page(request, rows, n, lambda c: to_public(session, c))


@router.get("/{cohort_id}", response_model=CohortPublic, summary="A cohort", responses=problem_responses(401, 404))
def get_cohort(cohort_id: str, session: SessionDep, tenant: TenantDep):
    return to_public(session, _get(session, cohort_id, tenant=tenant))


@router.get(
    "/{cohort_id}/patients",
    response_model=Page[CohortPatientPublic],
    summary="Page through a cohort's patients",
    responses=problem_responses(401, 404, 422),
)
def list_cohort_patients(
    request: Request, cohort_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
    limit: LimitQuery = None, cursor: CursorQuery = None,
):
    _get(session, cohort_id, tenant=tenant)
    n = effective_limit(limit, settings)
    rows = store.list_patients(session, cohort_id, after_index=decode_index_cursor(cursor), limit=n + 1)
    more = len(rows) > n
    rows = rows[:n]
    items = [{"index": r.index, **r.patient} for r in rows]
    return page_body(request, items, encode_cursor(rows[-1].index) if more else None, n)


# The response header that says where an export's dates come from (docs/formats.md).
DATES_HEADER = "PromptEHR-Dates"


def start_date_of(text: str | None) -> dt.date | None:
    """The export's `start_date` query parameter as a date (None: the export's default); a 422 naming
    it where it is no date an export can start from."""
    if text is None:
        return None
    # Imported here, as service/export.py does: model.data's package imports pandas.
    from promptehr.model.data.export import check_start_date

    try:
        day = dt.date.fromisoformat(text)
    except ValueError as e:
        raise validation_problem([field_error(["query", "start_date"], f"expected a date as YYYY-MM-DD, got "
                                              f"{text!r} ({e})")]) from None
    try:
        check_start_date(day)
    except ValueError as e:
        raise validation_problem([field_error(["query", "start_date"], str(e))]) from None
    return day


@router.get(
    "/{cohort_id}/export",
    summary="Download a cohort (streamed)",
    description="`jsonl`: one patient per line, codes as the model writes them (ICD-9-CM bare: `4019`, "
    "ICD-10-CM prefixed: `icd10:I10`); `csv`: long format (patient_id, visit_id, visit_time, code, age, sex; "
    "for a model that knows ICD-10-CM a `code_system` column, icd9 or icd10, follows the bare code); "
    "`mimic3`: a zip of DIAGNOSES_ICD.csv, PATIENTS.csv and ADMISSIONS.csv, ICD-9-CM only (a model that "
    "knows ICD-10-CM is a 422); `mimic4`: a zip of diagnoses_icd.csv (icd_code, icd_version 9 or 10, "
    "seq_num), patients.csv and admissions.csv. The same bytes as `promptehr generate --format` writes for "
    "the same model, size, seed and spec. Available once every shard has been generated.\n\n"
    "Dates: for a model that learned visit times, jsonl carries `visit_days` (days from the first visit, "
    "first 0) and `los_days` (one stay per visit, 0 = same day); csv gains `visit_end` after `visit_time` "
    "(ISO datetimes) and the zips' admission and discharge times follow them, every record's first visit on "
    "`start_date` (default 2020-01-01). For a model without time the dates are invented (a hash of each "
    "patient id) and the bytes are those of the exports before time. The `PromptEHR-Dates` header says "
    "which: `learned` or `invented`.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}, "application/zip": {}},
              "headers": {DATES_HEADER: {"description": "`learned`: the dates are the model's generated visit "
                                         "times, placed from `start_date`; `invented`: the model did not learn "
                                         "visit times and the dates are made up from each patient id",
                                         "schema": {"type": "string", "enum": ["learned", "invented"]}}}},
        **problem_responses(401, 404, 409, 422),
    },
)
def export_cohort(
    request: Request, cohort_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
    format: Annotated[Literal["jsonl", "csv", "mimic3", "mimic4"], Query()] = "jsonl",
    start_date: Annotated[str | None, Query(
        pattern=r"^\d{4}-\d{2}-\d{2}$", examples=["2020-01-01"],
        description="the date of every record's first visit (YYYY-MM-DD), for a model that learned visit times; "
                    "default 2020-01-01; no effect on invented dates")] = None,
):
    day = start_date_of(start_date)
    cohort = _get(session, cohort_id, tenant=tenant)
    if cohort.shards_done < cohort.n_shards:
        raise Problem(409, f"The cohort is not generated yet (status {cohort.status}).", type="cohort-not-ready")
    media_type, ext = export.FORMATS[format]
    model = store.get_model(session, cohort.model_id)
    try:
        dates, chunks = export.stream(format, session, cohort_id, settings.export_chunk_rows,
                                      code_systems=known_systems(model.config if model is not None else None),
                                      total=cohort.n_patients, start_date=day)
    except export.Unexportable as e:  # the format cannot hold the model's code systems
        raise validation_problem([field_error(["query", "format"], str(e))]) from None
    except export.ExportIncomplete:  # deleted since _get: its first page was all there was, and short
        raise Problem(404, f"No cohort {cohort_id}.", type="not-found") from None
    return StreamingResponse(
        export.gated(chunks, request.app.state.export_gate),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="cohort-{cohort_id}.{ext}"', DATES_HEADER: dates},
    )


@router.post(
    "/{cohort_id}/cancel",
    status_code=202,
    response_model=CohortPublic,
    summary="Cancel a cohort",
    description="Queued shards (and a queued evaluation) are cancelled at once; running ones stop at their "
    "worker's next batch of patients, and the cohort becomes `cancelled` when the last one has stopped "
    "(until then `cancel_requested` is true). Asking again meanwhile answers 202. A finished cohort "
    "(succeeded, failed or cancelled) answers 409.",
    responses=problem_responses(401, 404, 409),
)
def cancel_cohort(cohort_id: str, session: SessionDep, tenant: TenantDep):
    _get(session, cohort_id, tenant=tenant)
    if not store.request_cancel_cohort(session, cohort_id):
        cohort = _get(session, cohort_id, tenant=tenant)
        raise Problem(409, f"The cohort has finished ({cohort.status}).", type="job-finished")
    return to_public(session, _get(session, cohort_id, tenant=tenant))


@router.delete(
    "/{cohort_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a cohort",
    description="With its patients, shards and report. A cohort still queued or running (or one of whose "
    "jobs still runs) answers 409: cancel it first.",
    responses=problem_responses(401, 404, 409),
)
def delete_cohort(cohort_id: str, session: SessionDep, tenant: TenantDep):
    _get(session, cohort_id, tenant=tenant)
    try:
        deleted = store.delete_cohort(session, cohort_id)
    except store.InUse as e:
        raise Problem(409, str(e), type="in-use") from None
    if not deleted:
        raise Problem(404, f"No cohort {cohort_id}.", type="not-found")
    return Response(status_code=204)
