"""The report's JSON schema (pydantic v2), versioned: bump SCHEMA_VERSION on any incompatible change.

Sections fidelity / validity / privacy / utility each map a measure name to a Measure:
{"value", "limit", "threshold", "pass"} plus optional fields (direction, spread, full, reference, n).
The timeline section (1.3) is {"learned", "measured", "note", "timed_records", "measures"}: its measures
are Measures too, present only when both the cohort and the real data carry times (evaluation/timeline.py).
Serialise with report.to_json() (or model_dump(by_alias=True)) so that "pass" keeps its name.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

SCHEMA_VERSION = "1.3"  # 1.3: timeline, privacy_records, evaluation.privacy_times; 1.2: verdict, warnings, demographics, population, model_card; 1.1: model sample sizes, utility phenotypes, detection, fidelity by size


class Measure(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    value: float | None
    limit: float | None = None  # the holdout's value against train: what a perfect generator reaches
    threshold: float | None = None
    passed: bool | None = Field(default=None, alias="pass")
    limit_pass: bool | None = None  # would the holdout itself pass? (no: the threshold is too strict for this data)
    direction: str | None = None  # "min" | "max" | "rel" | "gap" (see thresholds.py)
    spread: float | None = None  # std over equal-size subsamples when value is their mean
    full: float | None = None  # the value on the whole cohort when value is a subsample mean
    reference: float | None = None  # the training data's own value, for "rel" thresholds


class CohortSummary(BaseModel):
    patients: int
    visits: int
    codes: int  # code slots
    distinct_codes: int


class DataSummary(BaseModel):
    train: CohortSummary
    holdout: CohortSummary
    synthetic: CohortSummary


class ModelScores(BaseModel):
    perplexity: dict[str, float | None]
    reconstruction_jaccard: float | None
    reconstruction_patients: int
    patients: int | None = None  # holdout patients scored (a seeded subsample when the holdout is larger)
    holdout_patients: int | None = None
    note: str | None = None  # holdout patients left out (a model with time scores records with their times)


class PhenotypeScore(BaseModel):
    """One utility phenotype (a CCS single-level diagnosis group): TSTR beside TRTR."""

    ccs: str
    title: str = ""
    train_share: float  # share of train patients with the phenotype
    synthetic_share: float
    holdout_positives: int
    tstr_auroc: float
    trtr_auroc: float
    trtr_equal_size_auroc: float | None = None  # TRTR on a train sample of the cohort's size (absent before it)


class FidelityBySize(BaseModel):
    """Prevalence R^2 against train of synthetic and holdout subsamples of n patients (mean of `repeats`)."""

    n: list[int]
    repeats: int
    synthetic: dict[str, list[float | None]]
    holdout: dict[str, list[float | None]]


class EvaluationConfig(BaseModel):
    """How the report was computed; recorded in it so a figure can be reproduced."""

    seed: int = 0  # subsamples, the train sample for privacy, classifiers, the model-score subsample
    n_subsamples: int = 5  # equal-size subsamples of the synthetic cohort
    utility_labels: int = 10  # utility phenotypes: the k most common CCS groups of train (schema 1.0: last-visit categories)
    model_patients: int | None = 2000  # holdout patients the model scores at most (model_scores.MODEL_PATIENTS)
    privacy_times: bool = False  # 1.3: privacy compares each record's times too (evaluation/privacy.py)


class Verdict(BaseModel):
    """The report's overall verdict: passed when every section passes (Report.passed)."""

    passed: bool
    failed_sections: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, passed: dict[str, bool]) -> Verdict:
        failed = [name for name, ok in passed.items() if not ok]
        return cls(passed=not failed, failed_sections=failed)


class ReportWarning(BaseModel):
    """Something that makes the measures hard to read, such as a cohort and real data of different
    sources (model/evaluation/sources.py)."""

    model_config = ConfigDict(extra="allow")

    kind: str  # code_systems | unseen_codes | code_overlap | timeline_partial
    about: str  # "the cohort" | "the model's training data" (timeline_partial: "the cohort" | "the train split" | "the holdout")
    message: str
    value: float | None = None
    threshold: float | None = None


class Timeline(BaseModel):
    """The timeline section (evaluation/timeline.py): did the model learn times, and how do they compare."""

    learned: bool  # some synthetic record carries visit_days and los_days
    measured: bool  # learned, and train and holdout carry them too: `measures` is filled
    note: str | None = None  # why not measured ("the model did not learn a timeline: ...")
    timed_records: dict[str, int] = Field(default_factory=dict)  # per cohort, records with times
    measures: dict[str, Measure] = Field(default_factory=dict)


class PrivacyRecords(BaseModel):
    """What the privacy measures compare: codes only (default), or codes and times."""

    with_times: bool
    note: str


class Report(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    schema_version: str = SCHEMA_VERSION
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    generator: dict[str, Any] | None = None  # the generator's configuration (model, sampling, ...)
    seeds: dict[str, Any] = Field(default_factory=dict)  # generation seeds
    split_seed: int | None = None
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    data: DataSummary
    fidelity: dict[str, Measure]
    validity: dict[str, Measure]
    privacy: dict[str, Measure]
    utility: dict[str, Measure]
    # 1.3; None in older reports. In `passed` (as "timeline") only when measured.
    timeline: Timeline | None = None
    privacy_records: PrivacyRecords | None = None
    utility_phenotypes: list[PhenotypeScore] = Field(default_factory=list)  # per phenotype, behind utility's means
    fidelity_by_size: FidelityBySize | None = None
    model: ModelScores | None = None
    passed: dict[str, bool] = Field(default_factory=dict)  # per section: every measure with a verdict passes
    # 1.2. Reports of 1.1 and before have neither: overall() derives the verdict from `passed`.
    verdict: Verdict | None = None
    warnings: list[ReportWarning] = Field(default_factory=list)
    # The cohort's age and sex beside the requested population (evaluation/demographics.py); not in `passed`.
    demographics: dict[str, Measure] = Field(default_factory=dict)
    population: dict[str, Any] | None = None  # {"requested": {...}, "synthetic": {...}}
    model_card: dict[str, Any] | None = None  # the model's card.json (training/card.py), when given
    seconds: dict[str, float] = Field(default_factory=dict)  # time per section

    # Arrays for the HTML figures (prevalences, lengths, distances); never serialised.
    _figures: dict[str, Any] | None = PrivateAttr(default=None)

    def overall(self) -> Verdict:
        """The verdict as written, or, for a report older than 1.2, the one its sections give."""
        return self.verdict if self.verdict is not None else Verdict.of(self.passed)

    def to_json(self, **kw) -> str:
        return self.model_dump_json(by_alias=True, **kw)

    def to_dict(self) -> dict:
        return self.model_dump(by_alias=True, mode="json")
