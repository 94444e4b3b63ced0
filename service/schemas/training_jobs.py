from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, computed_field

from promptehr.service.schemas.common import JobPublic, StrictModel


class TrainingJobBase(StrictModel):
    dataset_id: str = Field(min_length=1, max_length=64)
    preset: Literal["tiny", "small", "base"] = "small"
    mode: Literal["hierarchical", "flat"] = "hierarchical"
    epochs: int = Field(ge=1, description="At most the server's max_epochs.")
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    batch_size: int | None = Field(default=None, ge=1, le=4096)
    learning_rate: float | None = Field(default=None, gt=0, le=1)
    early_stopping_patience: int | None = Field(default=None, ge=0, le=1000)
    learn_time: bool = Field(default=True, description="Learn when visits happen and how long they last (gap and stay "
                                                        "tokens) where every training patient has dates; false: codes only.")
    devices: int = Field(default=1, ge=1, le=256,
                         description="Train data-parallel on this many devices of one worker (GPUs; on a CPU worker, "
                                     "gloo processes: its PROMPTEHR_CPU_DEVICES). More than any live worker offers is a 422.")


class TrainingJobCreate(TrainingJobBase):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"dataset_id": "8a1c0f9e-1111-4c3b-9d2e-0123456789ab", "preset": "tiny", "mode": "hierarchical",
                 "epochs": 3, "seed": 0},
                {"dataset_id": "8a1c0f9e-1111-4c3b-9d2e-0123456789ab", "preset": "small", "epochs": 10, "seed": 1,
                 "batch_size": 64, "learning_rate": 0.0005, "early_stopping_patience": 2},
            ]
        }
    )

    def options(self) -> dict[str, Any]:
        options = self.model_dump(include={"batch_size", "learning_rate", "early_stopping_patience"}, exclude_none=True)
        if not self.learn_time:  # absent means true: the options of earlier jobs stay as they were
            options["learn_time"] = False
        if self.devices != 1:  # absent means 1: the options of one-device jobs stay as they were
            options["devices"] = self.devices
        return options


class TrainingJobPublic(JobPublic):
    dataset_id: str
    preset: str
    mode: str
    epochs: int
    seed: int
    options: dict[str, Any]
    cancel_requested: bool
    model_id: str | None = None

    @computed_field
    @property
    def devices(self) -> int:
        return int(self.options.get("devices", 1))
