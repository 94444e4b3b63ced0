"""Trained models: list and read (they are created by training jobs)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from service import store
from service.deps import ApiKeyDep, SessionDep, SettingsDep
from service.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_time_cursor,
    effective_limit,
    time_page,
)
from service.problems import Problem
from service.schemas.common import problem_responses
from service.schemas.models import ModelPublic

router = APIRouter(prefix="/models", tags=["models"])


def to_public(model) -> dict:
    return ModelPublic.model_validate(model).model_dump(mode="json")


@router.get("", response_model=Page[ModelPublic], summary="List trained models", responses=problem_responses(401, 422))
def list_models(
    request: Request, session: SessionDep, settings: SettingsDep, _: ApiKeyDep,
    limit: LimitQuery = None, cursor: CursorQuery = None,
):
    n = effective_limit(limit, settings)
    rows = store.list_models(session, limit=n + 1, after=decode_time_cursor(cursor))
    return time_page(request, rows, n, to_public)


@router.get("/{model_id}", response_model=ModelPublic, summary="A trained model", responses=problem_responses(401, 404))
def get_model(model_id: str, session: SessionDep, _: ApiKeyDep):
    model = store.get_model(session, model_id)
    if model is None:
        raise Problem(404, f"No model {model_id}.", type="not-found")
    return to_public(model)
