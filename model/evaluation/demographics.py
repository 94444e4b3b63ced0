"""The cohort's age and sex beside the population it was asked for (the spec's, learned or given).

    {"age_mean_gap", "age_sd_gap", "age_histogram_tv", "female_share_gap"}: each a Measure whose value is
    the distance between the cohort and the request, with a "max" threshold.

The request is the cohort spec's age and sex (model/generation/population.py's `age_pmf` turns an age
distribution into whole-year probabilities); without one (a cohort file of unknown origin) the
training split stands in. Each limit is a fixed tolerance or three standard errors of an n-patient
sample drawn exactly from the request, whichever is larger, so that a correct cohort fails by chance
well under 1% of the time: mean age within 2 years, sd within 2 years, decade histogram within total
variation 0.05, female share within 0.03 (for DE-SynPUF's 72 +- 13 years and 57% women, the fixed
tolerances govern from about 1,000 patients for age and 2,500 for sex). The section has verdicts but does
not enter the report's overall one: the sampler draws demographics from the spec itself, so a fail says
the spec was not the one meant (or too few patients), not that the generator is poor.
"""
from __future__ import annotations

import math
from itertools import pairwise

import numpy as np

from promptehr.model.evaluation.schema import Measure
from promptehr.model.generation.population import AGE_EDGES, age_pmf
from promptehr.model.patient import Patient

AGE_MEAN_GAP = 2.0  # years
AGE_SD_GAP = 2.0  # years
AGE_HISTOGRAM_TV = 0.05  # total variation distance between decade histograms
FEMALE_SHARE_GAP = 0.03
SE = 3.0  # standard errors a limit allows at least


def _decades(pmf: np.ndarray) -> np.ndarray:
    years = np.arange(91)
    return np.array([pmf[(years >= lo) & (years < hi)].sum() for lo, hi in pairwise(AGE_EDGES)])


def requested_population(spec: dict | None, train: list[Patient]) -> dict:
    """{"source", "age_mean", "age_sd", "age_histogram" (decade shares), "female"} of the request: the spec's
    age and sex when it has both, the training split's otherwise."""
    if spec and spec.get("age") and spec.get("sex") and spec.get("patients") is None:
        pmf = age_pmf(spec["age"])
        female = float(spec["sex"].get("female", 0.5))
        source = (spec.get("demographics") or {}).get("age", "given")
    else:
        ages = np.clip(np.array([p.age for p in train], float), 0, 90).astype(int)
        pmf = np.bincount(ages, minlength=91)[:91] / max(len(ages), 1)
        female = float(np.mean([p.sex == "F" for p in train])) if train else 0.5
        source = "the training split (the cohort's spec is not known)"
    years = np.arange(91)
    mean = float((pmf * years).sum())
    return {"source": source, "age_mean": mean, "age_sd": float(math.sqrt((pmf * (years - mean) ** 2).sum())),
            "age_histogram": [round(float(x), 4) for x in _decades(pmf)], "female": female}


def cohort_population(synthetic: list[Patient]) -> dict:
    ages = np.clip(np.array([p.age for p in synthetic], float), 0, 90)
    hist, _ = np.histogram(ages, bins=AGE_EDGES)
    return {"patients": len(synthetic), "age_mean": float(ages.mean()), "age_sd": float(ages.std()),
            "age_histogram": [round(float(x), 4) for x in hist / max(len(ages), 1)],
            "female": float(np.mean([p.sex == "F" for p in synthetic]))}


def _gap(value: float, requested: float, limit: float, **extra) -> Measure:
    gap = abs(value - requested)
    return Measure(value=gap, threshold=limit, passed=bool(gap <= limit), direction="max", reference=requested,
                   synthetic=value, **extra)


def demographics_section(synthetic: list[Patient], requested: dict) -> tuple[dict[str, Measure], dict]:
    """(measures, {"requested": ..., "synthetic": ...}) for a non-empty cohort and requested_population()."""
    got = cohort_population(synthetic)
    n, sd, p = len(synthetic), requested["age_sd"], requested["female"]
    hist = np.asarray(requested["age_histogram"])
    # expected total variation of an n-sample's histogram: sum_j E|p^_j - p_j| / 2 ~ sum_j sqrt(2 p_j (1-p_j) / (pi n)) / 2
    tv_noise = float(np.sqrt(2 * hist * (1 - hist) / (math.pi * n)).sum() / 2)
    tv = float(np.abs(np.asarray(got["age_histogram"]) - hist).sum() / 2)
    measures = {
        "age_mean_gap": _gap(got["age_mean"], requested["age_mean"], max(AGE_MEAN_GAP, SE * sd / math.sqrt(n)), n=n),
        "age_sd_gap": _gap(got["age_sd"], requested["age_sd"], max(AGE_SD_GAP, SE * sd / math.sqrt(2 * n)), n=n),
        "age_histogram_tv": Measure(value=tv, threshold=max(AGE_HISTOGRAM_TV, SE * tv_noise),
                                    passed=bool(tv <= max(AGE_HISTOGRAM_TV, SE * tv_noise)), direction="max", n=n),
        "female_share_gap": _gap(got["female"], p, max(FEMALE_SHARE_GAP, SE * math.sqrt(p * (1 - p) / n)), n=n),
    }
    return measures, {"requested": requested, "synthetic": got}
