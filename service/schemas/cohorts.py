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
from promptehr.model.generation.options import (
    DEFAULT_FREQUENCY_MIX,
    MAX_STOP_BIAS,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    PRECISIONS,
    SamplingOptions,
)
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

    # Essential hypertension in each system (MIMIC-III's and DE-SynPUF's most common code is ICD-9 4019).
    model_config = ConfigDict(json_schema_extra={"examples": [{"code": "I10", "system": "icd10"},
                                                              {"code": "4019", "system": "icd9"}]})

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
    # Adults around 65, as in the MIMIC-III demo (median admission age 70) and DE-SynPUF (Medicare).
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"distribution": "normal", "mean": 65, "sd": 15, "min": 18, "max": 90}]})

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
    # Decade bins (the last holds 90, the cap) weighted like a Medicare population: few under 60.
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"distribution": "histogram", "bins": [0, 20, 40, 50, 60, 70, 80, 91], "weights": [1, 4, 6, 10, 30, 29, 20]}]})

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
    model_config = ConfigDict(json_schema_extra={"examples": [{"distribution": "fixed", "value": 72}]})

    distribution: Literal["fixed"]
    value: Age


AgeSpec = Annotated[NormalAge | HistogramAge | FixedAge, Field(discriminator="distribution")]


class SexSpec(StrictModel):
    # The MIMIC-III demo's mix: 55 of its 100 patients are female.
    model_config = ConfigDict(json_schema_extra={"examples": [{"female": 0.55}]})

    female: float = Field(ge=0, le=1, description="Share of female patients.")


class Sampling(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"temperature": 1.0, "top_p": 1.0, "top_k": 0},
                                                              {"temperature": 0.8, "top_p": 0.9, "top_k": 50}]})

    # The bounds the sampler honours (model/generation/options.py says why: float32 division).
    temperature: float = Field(default=SamplingOptions.temperature, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, description=(
        f"In [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]: below, float32 sampling breaks down (and is greedy already)."))
    top_p: float = Field(default=SamplingOptions.top_p, gt=0, le=1, description="Nucleus cut; 1: off.")
    stop_bias: float | None = Field(default=None, ge=-MAX_STOP_BIAS, le=MAX_STOP_BIAS, description=(
        "Added to the end-of-record logit after each visit: e^stop_bias times the odds of ending the record there; "
        "below 0, more visits per patient. Absent: the model's calibrated value (its population.json), which "
        "brings visits per patient to the training data's."))
    top_k: int = Field(default=SamplingOptions.top_k, ge=0, le=100_000, description="0: no top-k cut.")
    frequency_mix: float | None = Field(default=None, ge=0, le=1, description=(
        "Share of a code's probability, among its category's codes, taken from the training frequencies (the "
        f"rest from the model): above 0, more of the long tail of rare codes. 0: the model alone. Absent: "
        f"{DEFAULT_FREQUENCY_MIX:g} for a hierarchical model, 0 for a flat one (which refuses any other value)."))
    precision: Literal[PRECISIONS] = Field(default=SamplingOptions.precision, description=(
        "The decoder's arithmetic: \"bf16\" (bfloat16 autocast, faster) or \"fp32\". The draws are float32 either "
        "way; the same seed and precision give the same patients."))


class CohortBase(StrictModel):
    model_id: str = Field(min_length=1, max_length=64)
    n_patients: int = Field(ge=1, description="At most the server's max_cohort_patients.")
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    # Absent: the model's learned population (the training patients' age histogram and share of women,
    # model/generation/population.py), resolved by the generating worker and recorded in the cohort's spec.
    age: AgeSpec | None = Field(default=None, description=(
        "Absent: the training population's age histogram (the model's population.json; a model trained "
        "before learned defaults: normal 60 +- 20 in [0, 90]). The cohort's spec records which was used."))
    sex: SexSpec | None = Field(default=None, description="Absent: the training population's share of women (else 0.5).")
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
                },
                {   # hypertension and heart failure (ICD-9-CM 4019, 4280), a Medicare-like age mix
                    "model_id": "3f2b8c1d-2222-4e5f-8a9b-0123456789ab",
                    "n_patients": 500,
                    "age": {"distribution": "histogram", "bins": [0, 40, 60, 70, 80, 91], "weights": [5, 15, 30, 30, 20]},
                    "sex": {"female": 0.5},
                    "required_codes": ["4019", {"code": "4280", "system": "icd9"}],
                },
            ]
        },
    )

    def spec(self) -> dict[str, Any]:
        """The cohort spec as stored and as the worker reads it (model.generation.cohort.CohortSpec):
        required codes in the model's form ("4019", "icd10:I10")."""
        spec = self.model_dump(mode="json", include={"age", "sex", "required_codes", "sampling"})
        spec = {k: v for k, v in spec.items() if v is not None}  # absent age / sex: the worker resolves them
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
    # A model that learned time: days from the first visit's start to each visit's start (first 0) and each
    # visit's length of stay in days (0 = same day). null from a model without time.
    visit_days: list[int] | None = None
    los_days: list[int] | None = None
