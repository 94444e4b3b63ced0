"""Schemas shared by resources: job status and progress, problem documents (for the docs)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatusLiteral = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class StrictModel(BaseModel):
    """Request bodies: unknown fields, NaN and infinities are refused, and so are numbers sent as
    strings or booleans ("n_patients": "10" or true) and whole numbers sent as floats (10.0)."""

    # strict: a client that sends "10" or true for a number has a bug we should not guess around.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Progress(BaseModel):
    done: float | int = 0
    total: float | int | None = None
    unit: str | None = None


class JobPublic(BaseModel):
    """The fields every job resource has."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    status: JobStatusLiteral
    progress: Progress
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


class ProblemDocument(BaseModel):
    """RFC 9457 problem details (application/problem+json)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="Validation errors: field, loc, message, type")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for problem documents."""
    return {
        s: {"model": ProblemDocument, "content": {"application/problem+json": {}}, "description": "Problem"}
        for s in statuses
    }
