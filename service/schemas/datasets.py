from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from promptehr.service.schemas.common import StrictModel

DatasetFormat = Literal["mimic3", "mimic4", "desynpuf", "long"]
CodeSystem = Literal["icd9", "icd10"]


class DatasetBase(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    format: DatasetFormat
    path: str = Field(min_length=1, max_length=4096, description="Relative to the server's data root.")


class DatasetCreate(DatasetBase):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "desynpuf-1", "format": "desynpuf", "path": "desynpuf-sample/1-sample-10000"},
                         {"name": "mimic3-demo", "format": "mimic3", "path": "mimic3-demo"},
                         {"name": "mimic4-icd10", "format": "mimic4", "path": "mimic4-demo", "code_system": "icd10"}]
        }
    )

    code_system: CodeSystem | None = Field(default=None, description=(
        "The system of codes the source leaves open, for the whole data set (the CLI's --code-system): a long "
        "file without a code_system column is read in it, and MIMIC-IV keeps that version's admissions only. "
        "Absent: each source's own system, or what its codes say (a file mixing systems needs the column)."))


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    format: DatasetFormat
    path: str
    stats: dict[str, Any]
    created_at: datetime

    @computed_field
    @property
    def code_system(self) -> CodeSystem | None:
        """As registered; kept with the statistics it shaped (service/store/datasets.py)."""
        return self.stats.get("code_system")
