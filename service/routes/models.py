"""Trained models: list, read, download and delete (they are created by training jobs)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from promptehr.model.archive import zip_files
from promptehr.service import store
from promptehr.service.deps import SessionDep, SettingsDep, TenantDep
from promptehr.service.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_time_cursor,
    effective_limit,
    time_page,
)
from promptehr.service.problems import Problem
from promptehr.service.removal import confined, remove_under
from promptehr.service.schemas.common import problem_responses
from promptehr.service.schemas.models import ModelPublic

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


def checkpoint_members(settings, model) -> list[tuple[str, Path]]:
    """The checkpoint's files as the download holds them: manifest.json and every file it lists, each a
    regular file in the model's folder under the model root, the manifest the one registered. A Problem
    409 when the files are not those the model was registered with (moved, edited, removed)."""
    def unavailable(why: str) -> Problem:
        return Problem(409, f"The model's checkpoint cannot be downloaded: {why}.", type="checkpoint-unavailable")

    folder = confined(settings.model_root, model.checkpoint_path)
    manifest = folder / "manifest.json" if folder is not None else None
    if manifest is None or not manifest.is_file() or manifest.is_symlink():
        raise unavailable("its folder is missing or outside the model root")
    data = manifest.read_bytes()
    if hashlib.sha256(data).hexdigest() != model.manifest_sha256:
        raise unavailable("its manifest is not the one registered")
    try:
        names = sorted(json.loads(data)["files"])
    except (ValueError, KeyError, TypeError):
        raise unavailable("its manifest does not parse") from None
    members = [("manifest.json", manifest)]
    for name in names:
        path = folder / name
        if Path(name).name != name or path.is_symlink() or not path.is_file():
            raise unavailable(f"{name!r} is not a file of its folder")
        members.append((name, path))
    return members


@router.get(
    "/{model_id}/download",
    summary="Download a model's checkpoint",
    description="A zip of the checkpoint folder as `promptehr train` writes it (manifest.json and the files "
    "it lists with their sha256: weights as safetensors, config, vocabulary, training log), streamed; "
    "unpacked, it is a folder `promptehr generate --model` and `Synthesizer.load` read. Each file's "
    "sha256 is checked against the manifest when it is loaded.",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, **problem_responses(401, 404, 409)},
)
def download_model(model_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep):
    model = store.get_model(session, model_id, tenant=tenant)
    if model is None:
        raise Problem(404, f"No model {model_id}.", type="not-found")
    members = checkpoint_members(settings, model)
    session.close()  # the download holds no database connection
    return StreamingResponse(zip_files(members), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="model-{model_id}.zip"'})


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
