from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ReportPublic(BaseModel):
    """The report JSON of DESIGN section 6 (sections fidelity, validity, privacy, utility), as the
    evaluation wrote it."""

    model_config = ConfigDict(extra="allow")

    fidelity: dict[str, Any] | None = None
    validity: dict[str, Any] | None = None
    privacy: dict[str, Any] | None = None
    utility: dict[str, Any] | None = None
