from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field


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

    @computed_field
    @property
    def code_systems(self) -> list[str]:
        """The code systems the model knows ("icd9", "icd10")."""
        return known_systems(self.config)


def known_systems(config: dict[str, Any] | None) -> list[str]:
    """The code systems of a model row's config: its vocabulary's, as registered (worker/train_task.py);
    a model registered before the systems were recorded is ICD-9-CM only."""
    return list((config or {}).get("code_systems", ["icd9"]))
