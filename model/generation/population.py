"""The learned population: the age histogram and share of women of a model's training patients.

Training writes it next to the weights (`population.json`, listed in the manifest); a cohort spec
that gives no age or no sex takes it from there (`resolve_demographics`: the one function `promptehr
generate`, the generating worker and `Synthesizer.sample` call). A checkpoint from before learned
defaults has no such file: it keeps the old default, normal(60, 20) in [0, 90] and half women, and the
result says so. Torch-free, so the API may read it too.

    {"version": 1, "patients": 15566, "age_bins": [0, 10, ..., 80, 91], "age_weights": [0, 0, 99, ...],
     "age_mean": 72.1, "age_sd": 12.6, "female": 0.5701}
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE = "population.json"
VERSION = 1
# Decade bins for an age histogram; the last holds 90, the cap (model/generation/cohort.py's MAX_AGE).
AGE_EDGES = (0, 10, 20, 30, 40, 50, 60, 70, 80, 91)
OLD_AGE = {"distribution": "normal", "mean": 60.0, "sd": 20.0, "min": 0.0, "max": 90.0}
OLD_FEMALE = 0.5
LEARNED = "learned from the training population"
OLD_DEFAULT = "old default (the checkpoint has no population.json)"
GIVEN = "given"


@dataclass(frozen=True)
class Population:
    patients: int
    age_bins: tuple[float, ...]
    age_weights: tuple[int, ...]  # training patients per bin
    age_mean: float
    age_sd: float
    female: float
    # the end-of-record logit bias that brings a cohort's visits per patient to the training split's
    # (model/training/card.py calibrates it; SamplingOptions.stop_bias says what it does); 0: none
    stop_bias: float = 0.0

    def age_spec(self) -> dict:
        """The histogram as a cohort spec's age ({"distribution": "histogram", ...})."""
        return {"distribution": "histogram", "bins": list(self.age_bins), "weights": list(self.age_weights)}

    def spec(self) -> dict:
        """A cohort spec body's age and sex: the training mix."""
        return {"age": self.age_spec(), "sex": {"female": self.female}}

    def to_dict(self) -> dict:
        return {"version": VERSION, "patients": self.patients, "age_bins": list(self.age_bins),
                "age_weights": list(self.age_weights), "age_mean": self.age_mean, "age_sd": self.age_sd,
                "female": self.female, "stop_bias": self.stop_bias}

    @classmethod
    def from_dict(cls, d: dict) -> Population:
        if d.get("version") != VERSION:
            raise ValueError(f"unknown version {d.get('version')!r}, expected {VERSION}")
        bins = tuple(int(b) if float(b).is_integer() else float(b) for b in d["age_bins"])
        return cls(int(d["patients"]), bins, tuple(int(w) for w in d["age_weights"]),
                   float(d["age_mean"]), float(d["age_sd"]), float(d["female"]), float(d.get("stop_bias", 0.0)))


def population_of(patients) -> Population:
    """The age histogram (decades, ages capped at 90) and female share of `patients` (at least one)."""
    if not patients:
        raise ValueError("population of no patients")
    ages = np.clip(np.array([p.age for p in patients], float), 0, 90)
    weights, _ = np.histogram(ages, bins=AGE_EDGES)
    female = sum(p.sex == "F" for p in patients) / len(patients)
    return Population(len(patients), tuple(AGE_EDGES), tuple(int(w) for w in weights),
                      round(float(ages.mean()), 3), round(float(ages.std()), 3), round(female, 4))


def calibrated_stop_bias(train_visits: float, synthetic_visits: float, limit: float = 3.0) -> float:
    """The stop_bias that turns a cohort's `synthetic_visits` per patient into `train_visits`, taking the
    record's end as a constant per-visit stop probability q (visits ~ geometric, mean 1/q, so the odds of
    stopping are 1/(mean - 1)): e^bias = (synthetic - 1) / (train - 1). On DE-SynPUF 1-6 it gives -0.42 for
    1.50 against 1.76, where the sweep (docs/evaluation.md, step 2) found -0.3 to -0.5 bracketing the
    target. 0 when either cohort has (nearly) one visit per patient: no decision to calibrate."""
    if min(train_visits, synthetic_visits) < 1.01:
        return 0.0
    return round(float(np.clip(np.log((synthetic_visits - 1) / (train_visits - 1)), -limit, limit)), 4)


def stop_bias_secant(train_visits: float, bias0: float, visits0: float, bias1: float, visits1: float,
                     limit: float = 3.0) -> float:
    """The bias where the log odds g(b) = log(visits(b) - 1) - log(train - 1) is 0, by the secant through
    (`bias0`, `visits0`) and (`bias1`, `visits1`); `bias1` itself when the two rounds are the same point,
    moved nothing or left (nearly) one visit per patient."""
    if min(train_visits, visits0, visits1) < 1.01 or bias0 == bias1:
        return bias1
    target = np.log(train_visits - 1)
    g0, g1 = np.log(visits0 - 1) - target, np.log(visits1 - 1) - target
    if g1 == g0:
        return bias1
    return round(float(np.clip(bias1 - g1 * (bias1 - bias0) / (g1 - g0), -limit, limit)), 4)


def read_population(directory) -> Population | None:
    """The population.json of a checkpoint directory; None when it has none (an older checkpoint)."""
    path = Path(directory) / FILE
    if not path.is_file():
        return None
    try:
        return Population.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a population file ({e})") from None


@dataclass(frozen=True)
class Resolved:
    body: dict  # the spec body with age and sex filled, and "demographics": where each came from
    warning: str | None  # set when an absent age or sex fell back on the old default


def resolve_demographics(body: dict, model_dir) -> Resolved:
    """Fill a cohort spec body's absent `age` and `sex` from the model's learned population, or, for a
    checkpoint without one, the old default (with a warning). Given demographics (`patients`) need neither."""
    return fill_demographics(body, read_population(model_dir), model_dir)


def fill_demographics(body: dict, population: Population | None, model_dir="the model") -> Resolved:
    out, note, old = {k: v for k, v in body.items() if k != "demographics"}, {}, []
    prior = body.get("demographics") or {}  # a spec resolved before keeps its record
    learned = population.spec() if population is not None else {}
    for key, default in (("age", OLD_AGE), ("sex", {"female": OLD_FEMALE})):
        if out.get(key) or out.get("patients") is not None:
            note[key] = prior.get(key, GIVEN)
        elif population is not None:
            out[key], note[key] = learned[key], LEARNED
        else:
            out[key], note[key] = dict(default), OLD_DEFAULT
            old.append(key)
    sampling = dict(out.get("sampling") or {})
    if sampling.get("stop_bias") is None:  # absent: the checkpoint's calibrated bias (0 without one)
        sampling["stop_bias"] = population.stop_bias if population is not None else 0.0
    out["sampling"] = sampling
    warning = None
    if old:
        warning = (f"{model_dir}: no {FILE} (trained before learned defaults), so the {' and '.join(old)} "
                   f"not given use the old default: normal(60, 20) in [0, 90], female share 0.5; train again "
                   f"to use the training population's")
    return Resolved({**out, "demographics": note}, warning)


def age_pmf(age: dict) -> np.ndarray:
    """P(age = a) for whole years a = 0..90 under a cohort spec's age distribution (as AgeSpec draws it)."""
    a = np.arange(91, dtype=float)
    d = age.get("distribution", "normal")
    if d == "fixed":
        p = (a == math.floor(float(age["value"]))).astype(float)
    elif d == "histogram":
        b, w = np.asarray(age["bins"], float), np.asarray(age["weights"], float)
        p = np.zeros(91)
        for lo, hi, wj in zip(b[:-1], b[1:], w):
            years = (a >= math.ceil(lo)) & (a < hi)  # uniform over the whole years in [lo, hi), 90 at most
            if years.any() and wj > 0:
                p[years] += wj / years.sum()
    else:
        mean, sd = float(age.get("mean", 60.0)), float(age.get("sd", 20.0))
        lo, hi = math.floor(float(age.get("min", 0.0))), math.floor(float(age.get("max", 90.0)))
        if sd == 0:
            p = (a == min(max(math.floor(mean), lo), hi)).astype(float)
        else:
            cdf = np.array([0.5 * (1 + math.erf((x - mean) / (sd * math.sqrt(2)))) for x in np.arange(92)])
            p = np.diff(cdf) * ((a >= lo) & (a <= hi))
            if p.sum() <= 0:  # the window far in a tail: AgeSpec clips the mean into it
                p = (a == min(max(math.floor(mean), lo), hi)).astype(float)
    return p / p.sum()
