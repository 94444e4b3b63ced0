"""POST/GET/DELETE /datasets: register a dataset under the data root and compute its statistics."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from promptehr.model.errors import DataError
from promptehr.service import store
from promptehr.service.data_paths import read_limits, relative_to_data_root
from promptehr.service.deps import ApiKeyDep, SessionDep, SettingsDep, TenantDep
from promptehr.service.idempotency import idempotent_create
from promptehr.service.links import link_for
from promptehr.service.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_time_cursor,
    effective_limit,
    time_page,
)
from promptehr.service.problems import Problem, field_error, validation_problem
from promptehr.service.schemas.common import problem_responses
from promptehr.service.schemas.datasets import DatasetCreate, DatasetPublic
from promptehr.service.settings import Settings

router = APIRouter(prefix="/datasets", tags=["datasets"])


def resolve_dataset_path(settings: Settings, path: str) -> Path:
    """The dataset's real location: must resolve (symlinks followed) inside the data root."""
    root = Path(settings.data_root).resolve()
    given = Path(path)
    if given.is_absolute() or path.startswith(("/", "\\")):
        raise validation_problem([field_error(["body", "path"], "must be relative to the data root")])
    try:
        resolved = (root / given).resolve()
        inside = resolved == root or resolved.is_relative_to(root)
        exists = inside and resolved.exists()
    except (OSError, ValueError, RuntimeError):  # name too long, NUL byte, symlink loop (RuntimeError)
        raise validation_problem([field_error(["body", "path"], "not a usable path")]) from None
    if not inside:
        raise validation_problem([field_error(["body", "path"], "must stay inside the data root")])
    if not exists:
        raise validation_problem([field_error(["body", "path"], "no such file or folder under the data root")])
    return resolved


def compute_stats(path: Path, fmt: str, data_root: str | Path | None = None, code_system: str | None = None,
                  limits=None) -> dict:
    """Load the dataset with model.data (pandas, no torch), in `code_system` where its sources leave
    the system open, and summarise it; a file named in an error is shown relative to `data_root`.
    `limits` (model.data.ReadLimits): what a file must be to be read (a FIFO, a gzip bomb, a symlink
    out of the root are 422s naming it, never a hung or swollen API worker)."""
    # Imported on first use, not with the app: model.data brings pandas (about 0.4 s of every API
    # start-up and test app, measured after the app's own imports); only POST /datasets needs it.
    from promptehr.model.data import dataset_stats, load_patients

    try:
        patients = load_patients([path], format=fmt, code_system=code_system, limits=limits)
    except DataError as e:
        raise validation_problem([field_error(["body", "path"], f"cannot be read as {fmt}: {relative_to_data_root(str(e), data_root)}")]) from None
    stats = dataset_stats(patients)
    return dict(stats) if not isinstance(stats, dict) else stats


def to_public(dataset) -> dict:
    return DatasetPublic.model_validate(dataset).model_dump(mode="json")


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    summary="Register a dataset",
    responses=problem_responses(401, 409, 413, 422, 503),
)
async def create_dataset(
    request: Request, body: DatasetCreate, session: SessionDep, settings: SettingsDep, api_key: ApiKeyDep
):
    resolved = resolve_dataset_path(settings, body.path)

    def create():
        stats = compute_stats(resolved, body.format, settings.data_root, body.code_system, read_limits(settings))
        dataset = store.create_dataset(session, name=body.name, format=body.format, path=body.path, stats=stats,
                                       code_system=body.code_system, tenant=api_key.tenant)
        return 201, to_public(dataset), link_for(request, "get_dataset", dataset_id=dataset.id)

    return await run_in_threadpool(idempotent_create, request, session, settings, api_key, body, create)


@router.get("", response_model=Page[DatasetPublic], summary="List datasets", responses=problem_responses(401, 422))
def list_datasets(
    request: Request, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
    limit: LimitQuery = None, cursor: CursorQuery = None,
):
    n = effective_limit(limit, settings)
    rows = store.list_datasets(session, limit=n + 1, after=decode_time_cursor(cursor), tenant=tenant)
    return time_page(request, rows, n, to_public)


@router.get("/{dataset_id}", response_model=DatasetPublic, summary="A dataset", responses=problem_responses(401, 404))
def get_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep):
    dataset = store.get_dataset(session, dataset_id, tenant=tenant)
    if dataset is None:
        raise Problem(404, f"No dataset {dataset_id}.", type="not-found")
    return to_public(dataset)


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a dataset's registration",
    description="The registration and its finished training jobs; the data files are never touched. A "
    "dataset with a model trained on it (delete the model first) or a queued or running training job "
    "answers 409.",
    responses=problem_responses(401, 404, 409),
)
def delete_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep):
    if store.get_dataset(session, dataset_id, tenant=tenant) is None:
        raise Problem(404, f"No dataset {dataset_id}.", type="not-found")
    try:
        deleted = store.delete_dataset(session, dataset_id)
    except store.InUse as e:
        raise Problem(409, str(e), type="in-use") from None
    if not deleted:
        raise Problem(404, f"No dataset {dataset_id}.", type="not-found")
    return Response(status_code=204)
