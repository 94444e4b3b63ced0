from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ReportPublic(BaseModel):
    """The report JSON of DESIGN section 6 (sections fidelity, validity, privacy, utility), as the
    evaluation wrote it."""

    model_config = ConfigDict(extra="allow")

    fidelity: dict[str, Any] | None = None
    validity: dict[str, Any] | None = None
    privacy: dict[str, Any] | None = None
    utility: dict[str, Any] | None = None
    # Schema 1.2 (model/evaluation/schema.py); absent from older reports.
    verdict: dict[str, Any] | None = Field(default=None, description='{"passed": bool, "failed_sections": [...]}: '
                                           "passed when every section passes.")
    warnings: list[dict[str, Any]] = Field(default_factory=list, description=(
        "Why the measures may be hard to read, each {kind, about, message, ...}: code_systems, unseen_codes or "
        "code_overlap (the cohort and the real data look like different sources)."))
