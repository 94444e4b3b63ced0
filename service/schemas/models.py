from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class ModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: str
    name: str
    dataset_id: str
    training_job_id: str | None = None
    manifest_sha256: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime
