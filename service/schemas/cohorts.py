from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from service.schemas.common import JobPublic, StrictModel

# The model's limits (model/cohort.py, MAX_AGE): ages are whole years in [0, 90], as every loader caps
# them (MIMIC shifts ages over 89); a histogram's last edge may be 91, since bin [90, 91) is age 90.
# Checked here so that an age the model would refuse is a 422 at POST time, not a failed job.
# (service/ does not import model.generation.cohort, which pulls in torch; a test keeps the two in step.)
MAX_AGE = 90
Age = Annotated[float, Field(ge=0, le=MAX_AGE)]
BinEdge = Annotated[float, Field(ge=0, le=MAX_AGE + 1)]
# Undotted ICD-9-CM diagnosis codes: 3-5 digits, V + 2-4 digits, E + 3-4 digits.
ICD9Code = Annotated[str, StringConstraints(pattern=r"^(?:[0-9]{3,5}|V[0-9]{2,4}|E[0-9]{3,4})$")]  # ASCII digits, as model/icd9.py


class NormalAge(StrictModel):
    distribution: Literal["normal"]
    mean: Age
    sd: float = Field(gt=0, le=120)
    min: Age = 0
    max: Age = 90

    @model_validator(mode="after")
    def _range(self) -> NormalAge:
        if not self.min < self.max:
            raise ValueError("min must be less than max")
        return self


class HistogramAge(StrictModel):
    distribution: Literal["histogram"]
    bins: list[BinEdge] = Field(min_length=2, max_length=200, description=(
        f"Bin edges in years, strictly increasing, in [0, {MAX_AGE + 1}]: bin [a, b) draws whole years a..b-1."))
    weights: list[Annotated[float, Field(ge=0)]] = Field(min_length=1, max_length=199)

    @model_validator(mode="after")
    def _shape(self) -> HistogramAge:
        if any(b >= a for a, b in zip(self.bins[1:], self.bins[:-1])):
            raise ValueError("bins must be strictly increasing")
        if len(self.weights) != len(self.bins) - 1:
            raise ValueError("weights must have one entry per bin (len(bins) - 1)")
        if not sum(self.weights) > 0:
            raise ValueError("weights must sum to more than 0")
        return self


class FixedAge(StrictModel):
    distribution: Literal["fixed"]
    value: Age


AgeSpec = Annotated[NormalAge | HistogramAge | FixedAge, Field(discriminator="distribution")]


class SexSpec(StrictModel):
    female: float = Field(ge=0, le=1, description="Share of female patients.")


class Sampling(StrictModel):
    temperature: float = Field(default=1.0, gt=0, le=10)
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, le=100_000, description="0: no top-k cut.")


class CohortBase(StrictModel):
    model_id: str = Field(min_length=1, max_length=64)
    n_patients: int = Field(ge=1, description="At most the server's max_cohort_patients.")
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    age: AgeSpec
    sex: SexSpec
    required_codes: list[ICD9Code] = Field(default_factory=list, max_length=50)
    sampling: Sampling = Field(default_factory=Sampling)


class CohortCreate(CohortBase):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "model_id": "3f2b8c1d-2222-4e5f-8a9b-0123456789ab",
                    "n_patients": 1000,
                    "seed": 7,
                    "age": {"distribution": "normal", "mean": 70, "sd": 10, "min": 18, "max": 90},
                    "sex": {"female": 0.55},
                    "required_codes": ["25000"],
                    "sampling": {"temperature": 1.0, "top_p": 0.95},
                }
            ]
        },
    )

    def spec(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include={"age", "sex", "required_codes", "sampling"})


class CohortPublic(JobPublic):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    model_id: str
    n_patients: int
    seed: int
    spec: dict[str, Any]
    n_shards: int
    shards_done: int
    report_id: str | None = None


class CohortPatientPublic(StrictModel):
    index: int
    patient_id: str
    age: float
    sex: str
    visits: list[list[str]]
