"""Trained models: list, read and delete (they are created by training jobs)."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service import store
from service.deps import SessionDep, SettingsDep, TenantDep
from service.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_time_cursor,
    effective_limit,
    time_page,
)
from service.problems import Problem
from service.removal import remove_under
from service.schemas.common import problem_responses
from service.schemas.models import ModelPublic

router = APIRouter(prefix="/models", tags=["models"])


def to_public(model) -> dict:
    return ModelPublic.model_validate(model).model_dump(mode="json")


@router.get("", response_model=Page[ModelPublic], summary="List trained models", responses=problem_responses(401, 422))
def list_models(
    request: Request, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
    limit: LimitQuery = None, cursor: CursorQuery = None,
):
    n = effective_limit(limit, settings)
    rows = store.list_models(session, limit=n + 1, after=decode_time_cursor(cursor), tenant=tenant)
    return time_page(request, rows, n, to_public)


@router.get("/{model_id}", response_model=ModelPublic, summary="A trained model", responses=problem_responses(401, 404))
def get_model(model_id: str, session: SessionDep, tenant: TenantDep):
    model = store.get_model(session, model_id, tenant=tenant)
    if model is None:
        raise Problem(404, f"No model {model_id}.", type="not-found")
    return to_public(model)


@router.delete(
    "/{model_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a model",
    description="Its row and its checkpoint folder (only under the model root). A model from which "
    "cohorts were generated answers 409 (delete them first), as does one whose training job still runs.",
    responses=problem_responses(401, 404, 409),
)
def delete_model(model_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep):
    if store.get_model(session, model_id, tenant=tenant) is None:
        raise Problem(404, f"No model {model_id}.", type="not-found")
    try:
        path = store.delete_model(session, model_id)
    except store.InUse as e:
        raise Problem(409, str(e), type="in-use") from None
    if path is None:
        raise Problem(404, f"No model {model_id}.", type="not-found")
    # After the commit: a crash in between leaves files no row names, never a row without its files.
    for leftover in (path, path + ".resume"):
        remove_under(settings.model_root, leftover)
    return Response(status_code=204)
