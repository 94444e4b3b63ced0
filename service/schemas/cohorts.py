from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from promptehr.model import codes
from promptehr.model.generation.cohort import MAX_AGE
from promptehr.model.generation.options import MAX_TEMPERATURE, MIN_TEMPERATURE
from promptehr.service.schemas.common import JobPublic, StrictModel

# The model's limits (model/generation/cohort.py, MAX_AGE): ages are whole years in [0, 90], as every loader caps
# them (MIMIC shifts ages over 89); a histogram's last edge may be 91, since bin [90, 91) is age 90.
# Checked here so that an age the model would refuse is a 422 at POST time, not a failed job.
Age = Annotated[float, Field(ge=0, le=MAX_AGE)]
BinEdge = Annotated[float, Field(ge=0, le=MAX_AGE + 1)]
# A required code names its system as the model's strings do (model/codes.py), undotted: a bare
# string is ICD-9-CM ("4019", as required codes always were), "icd9:4019" too, "icd10:I10" is ICD-10-CM;
# or an object {"code": "I10", "system": "icd10"}. The shapes are model/icd9.py's and model/icd10.py's
# (ASCII digits: \d also matches other scripts' digits, which the model's loaders refuse).
CODE_STRING = rf"^(?:(?:icd9:)?{codes.PATTERNS['icd9']}|icd10:{codes.PATTERNS['icd10']})$"
CODE_STRING_ERROR = ("expected an undotted diagnosis code: ICD-9-CM bare or prefixed icd9: (4019, V5861, icd9:4019), "
                     "ICD-10-CM prefixed icd10: (icd10:I10, icd10:E119), or {\"code\": \"I10\", \"system\": \"icd10\"}")


def _code_string(text: str) -> str:
    if re.fullmatch(CODE_STRING, text) is None:
        raise ValueError(CODE_STRING_ERROR)
    return text


CodeString = Annotated[str, AfterValidator(_code_string), WithJsonSchema(
    {"type": "string", "pattern": CODE_STRING, "examples": ["4019", "icd9:4019", "icd10:I10"],
     "description": "Bare or icd9: for ICD-9-CM, icd10: for ICD-10-CM; undotted."})]


class CodeRef(StrictModel):
    """A code and its system: {"code": "I10", "system": "icd10"}."""

    code: str = Field(max_length=16, description="Undotted: 4019, V5861 (ICD-9-CM); I10, E119 (ICD-10-CM).")
    system: Literal["icd9", "icd10"]

    @model_validator(mode="after")
    def _shape(self) -> CodeRef:
        if re.fullmatch(codes.PATTERNS[self.system], self.code) is None:
            raise ValueError(f"not an undotted {codes.NAMES[self.system]} code (such as {codes.EXAMPLES[self.system]})")
        return self


def _code_form(value: Any) -> str:
    return "object" if isinstance(value, (dict, CodeRef)) else "string"


# Tagged, so a bad code gets the one error of its form (body.required_codes.0.string or ...0.object.system).
RequiredCode = Annotated[Annotated[CodeString, Tag("string")] | Annotated[CodeRef, Tag("object")], Discriminator(_code_form)]


def in_memory(code: str | CodeRef) -> str:
    """The code as the model's strings write it: "4019", "icd10:I10" ("icd9:4019" -> "4019")."""
    return codes.qualify(code.code, code.system) if isinstance(code, CodeRef) else codes.normalize(code)


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
    weights: list[Annotated[float, Field(ge=0)]] = Field(min_length=1, max_length=199, description=(
        "Relative, >= 0, not all 0; their sum must be a finite double (the model divides by it)."))

    @field_validator("weights")
    @classmethod
    def _sum(cls, value: list[float]) -> list[float]:
        # The model draws a bin with p = w / sum(w) in float64: a sum of 0 or one that overflows to inf
        # ([1e308, 1e308]) gives NaN probabilities and a failed job. The weights are >= 0, so whatever the
        # order of the additions the sum overflows when the total does (model.generation.cohort.AgeSpec).
        total = sum(value)
        if not total > 0:
            raise ValueError("weights must sum to more than 0")
        if not math.isfinite(total):
            raise ValueError("weights must sum to a finite number (at most about 1.8e308)")
        return value

    @model_validator(mode="after")
    def _shape(self) -> HistogramAge:
        if any(b >= a for a, b in zip(self.bins[1:], self.bins[:-1])):
            raise ValueError("bins must be strictly increasing")
        if len(self.weights) != len(self.bins) - 1:
            raise ValueError("weights must have one entry per bin (len(bins) - 1)")
        return self


class FixedAge(StrictModel):
    distribution: Literal["fixed"]
    value: Age


AgeSpec = Annotated[NormalAge | HistogramAge | FixedAge, Field(discriminator="distribution")]


class SexSpec(StrictModel):
    female: float = Field(ge=0, le=1, description="Share of female patients.")


class Sampling(StrictModel):
    # The bounds the sampler honours (model/generation/options.py says why: float32 division).
    temperature: float = Field(default=1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, description=(
        f"In [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]: below, float32 sampling breaks down (and is greedy already)."))
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, le=100_000, description="0: no top-k cut.")


class CohortBase(StrictModel):
    model_id: str = Field(min_length=1, max_length=64)
    n_patients: int = Field(ge=1, description="At most the server's max_cohort_patients.")
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    age: AgeSpec
    sex: SexSpec
    required_codes: list[RequiredCode] = Field(default_factory=list, max_length=50, description=(
        "Codes every patient has (in its first visit), each a string (\"4019\", \"icd9:4019\", \"icd10:I10\": "
        "a bare code is ICD-9-CM) or an object {\"code\": \"I10\", \"system\": \"icd10\"}; undotted, no code twice."))
    sampling: Sampling = Field(default_factory=Sampling)

    @field_validator("required_codes")
    @classmethod
    def _distinct_codes(cls, value: list) -> list:
        # "4019" and "icd9:4019" are one code; the model refuses a spec naming a code twice.
        if len({in_memory(c) for c in value}) != len(value):
            raise ValueError("names a code twice")
        return value


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
        """The cohort spec as stored and as the worker reads it (model.generation.cohort.CohortSpec):
        required codes in the model's form ("4019", "icd10:I10")."""
        spec = self.model_dump(mode="json", include={"age", "sex", "required_codes", "sampling"})
        return {**spec, "required_codes": [in_memory(c) for c in self.required_codes]}  # same key order


class CohortPublic(JobPublic):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    model_id: str
    n_patients: int
    seed: int
    spec: dict[str, Any]
    n_shards: int
    shards_done: int
    report_id: str | None = None
    # POST /cohorts/{id}/cancel was called: running shards stop at their next batch.
    cancel_requested: bool = False


class CohortPatientPublic(StrictModel):
    index: int
    patient_id: str
    age: float
    sex: str
    visits: list[list[str]]
