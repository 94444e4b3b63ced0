from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import StrictModel

DatasetFormat = Literal["mimic3", "mimic4", "desynpuf", "long"]


class DatasetBase(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    format: DatasetFormat
    path: str = Field(min_length=1, max_length=4096, description="Relative to the server's data root.")


class DatasetCreate(DatasetBase):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "desynpuf-1", "format": "desynpuf", "path": "desynpuf-sample/1-sample-10000"}]
        }
    )


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    format: DatasetFormat
    path: str
    stats: dict[str, Any]
    created_at: datetime
