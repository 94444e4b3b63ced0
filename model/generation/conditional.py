"""Demographics drawn directly from the spec's distribution conditioned on the required codes, for the
rare patient whose redraws (model/generation/cohort.py, MAX_REDRAWS) all broke a sex/age rule.

Redrawing until the codes are allowed is sampling (age, sex) from the spec's distribution restricted
to the allowed pairs; when that set holds little mass (a delivery code with "female": 0.01, or an
age window reaching 10-55 only in its tail) 200 redraws are not enough for every patient, and the
job used to fail. This draws the same restricted distribution in one step instead: the whole-year
ages the spec can produce, weighted by their probability under the spec (a normal's density at the
year's middle, relative to the best allowed year so that a far tail never underflows to 0; a
histogram's share of each bin that falls in the year), times the sex's share, kept where every
required code is allowed. Only patients that used to fail take this path, so no cohort that could
be generated before changes. A spec with no allowed pair at all still raises (check_feasible
refuses it before generation, and POST /cohorts with a 422).
"""
from __future__ import annotations

import math

import numpy as np

from promptehr.model.rules import is_allowed

MAX_AGE = 90  # as model.generation.cohort.MAX_AGE (cohort.py imports this module, not the other way)


def year_log_weights(age) -> tuple[np.ndarray, np.ndarray]:
    """(whole-year ages, log of their unnormalised probability) an AgeSpec can draw."""
    if age.distribution == "fixed":
        return np.array([math.floor(age.value)], float), np.zeros(1)
    if age.distribution == "normal":
        lo, hi = math.floor(age.min), math.floor(age.max)
        years = np.arange(lo, hi + 1, dtype=float)
        if not age.sd > 0:  # a point mass, clipped into the window as AgeSpec.draw does
            return np.array([min(max(math.floor(age.mean), lo), hi)], float), np.zeros(1)
        return years, -0.5 * ((years + 0.5 - age.mean) / age.sd) ** 2
    bins, weights = np.asarray(age.bins, float), np.asarray(age.weights, float)
    years = np.arange(math.floor(bins[0]), min(math.ceil(bins[-1]), MAX_AGE + 1), dtype=float)
    share = weights / weights.sum() / np.diff(bins)  # probability per year of each bin
    top, bottom = np.minimum(years[:, None] + 1, bins[None, 1:]), np.maximum(years[:, None], bins[None, :-1])
    overlap = np.clip(top - bottom, 0, None)  # (years, bins): how much of each year lies in each bin
    mass = overlap @ share  # bins end at 91 at most (AgeSpec): the last year is 90
    with np.errstate(divide="ignore"):
        return years, np.log(mass)


def conditional_demographics(spec, rng: np.random.Generator) -> tuple[float, str]:
    """One (age, sex) from spec's distribution restricted to the pairs where every required code is allowed."""
    years, logw = year_log_weights(spec.age)
    pairs, logs = [], []
    for sex, share in (("F", spec.female), ("M", 1 - spec.female)):
        if share <= 0:
            continue
        for year, lw in zip(years, logw):
            if np.isfinite(lw) and all(is_allowed(c, sex, float(year)) for c in spec.required_codes):
                pairs.append((float(year), sex))
                logs.append(lw + math.log(share))
    if not pairs:
        raise ValueError(f"no demographics allowing required codes {list(spec.required_codes)}: "
                         "every age and sex this spec can draw breaks a sex/age rule")
    w = np.exp(np.asarray(logs) - max(logs))
    return pairs[int(rng.choice(len(pairs), p=w / w.sum()))]
