"""The end of training: the learned population and the model card, written into the checkpoint.

`finish` runs once the best weights are on disk (model/training/train.py calls it for every caller:
`promptehr train`, `Synthesizer.fit`, the service's training jobs, the demo). It writes

    population.json   the training split's age histogram and share of women (generation/population.py), and
                      the calibrated stop_bias: the end-of-record logit bias that brings a cohort's visits
                      per patient to the training split's (calibrate_stop)
    card.json         {"data": {"source", "splits": {name: {patients, visits, codes, distinct_codes}}},
                       "preset", "mode", "epochs", "epochs_run", "best_epoch", "status", "training_seconds",
                       "code_systems", "perplexity": {"heldout", "patients", "ppl", "baseline_ppl", ...,
                       "worse_than_unigram"}, "check_cohort": {"patients", "seed", "verdict", "passed",
                       "demographics", "seconds"}, "warnings": [...], "card_seconds"}

The held-out perplexity is scored on at most HELDOUT_PATIENTS seeded patients of the holdout (the
validation split when the caller has none); the check cohort is CHECK_PATIENTS patients of the learned
population, evaluated without model scores against that held-out set, with a seeded sample of at most
REFERENCE_PATIENTS training patients as the reference, so the card costs seconds, not minutes.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from promptehr.model.evaluation import EvaluationConfig, build_report
from promptehr.model.generation.cohort import generate_cohort
from promptehr.model.generation.options import DEFAULT_BATCH_SIZE
from promptehr.model.generation.population import (
    calibrated_stop_bias,
    fill_demographics,
    population_of,
    stop_bias_secant,
)
from promptehr.model.nn import checkpoint as ckpt
from promptehr.model.training.perplexity import heldout_perplexity

HELDOUT_PATIENTS = 500
CHECK_PATIENTS = 300
CALIBRATION_PATIENTS = (200, 4000)  # (fewest, most) per round: calibration_patients says why
CALIBRATION_ROUNDS = 4  # cohorts generated at most (the first without a bias); DE-SynPUF 1-6: ~27 s each
CALIBRATION_TOLERANCE = 0.005  # a round this close to train's visits per patient (relative) ends the search
CALIBRATION_SEED_OFFSET = 1_000_003  # the calibration's cohorts: seed + this, away from the seeds users pick
REFERENCE_PATIENTS = 1000
MIN_HELDOUT = 10  # fewer held-out patients than this: no check cohort (its measures would be noise)


def split_summary(patients) -> dict:
    codes = [c for p in patients for v in p.visits for c in v]
    return {"patients": len(patients), "visits": sum(len(p.visits) for p in patients), "codes": len(codes),
            "distinct_codes": len(set(codes))}


def sample(patients: list, k: int, seed: int) -> list:
    """At most k of `patients`, a seeded sample in their order."""
    if len(patients) <= k:
        return list(patients)
    rows = np.sort(np.random.default_rng(seed).choice(len(patients), k, replace=False))
    return [patients[i] for i in rows]


def worse_than_unigram(ppl: float | None, baseline: float | None) -> bool:
    """Is a held-out perplexity not below the unigram baseline's? (the model learned less than code frequencies)"""
    return ppl is not None and baseline is not None and not ppl < baseline


def perplexity_figures(bundle, heldout: list, heldout_name: str, seed: int, batch_size: int, device) -> dict:
    model, vocab, tokenizer, _ = bundle
    scored = sample([p for p in heldout if p.visits], HELDOUT_PATIENTS, seed)
    if not scored:
        return {"heldout": heldout_name, "patients": 0, "ppl": None, "baseline_ppl": None, "worse_than_unigram": None}
    figures = heldout_perplexity(model, vocab, tokenizer, scored, batch_size=batch_size, device=device)
    figures = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()}
    return {"heldout": heldout_name, "patients": len(scored), **figures,
            "worse_than_unigram": worse_than_unigram(figures.get("ppl"), figures.get("baseline_ppl"))}


def calibration_patients(train_patients: int) -> int:
    """How many patients each calibration round generates: twice the training split, within CALIBRATION_PATIENTS.
    A cohort of n patients knows its visits per patient to sd/sqrt(n) (DE-SynPUF 1-6: sd 1.27 for a mean
    of 1.77, so 1,000 patients +-2.3% and 4,000 +-1.1%); twice the split keeps that noise below the split's own
    (the target is known no better), and a split of 100 patients costs 200 per round, not thousands."""
    lo, hi = CALIBRATION_PATIENTS
    return int(np.clip(2 * train_patients, lo, hi))


def calibrate_stop(bundle, population, train: list, seed: int, device):
    """(population with its stop_bias, the card's record). Up to CALIBRATION_ROUNDS cohorts of the learned
    population, all from one seed of their own (the same random numbers: only the bias differs, and no
    cohort a user or a README figure draws from seeds 0-99 shares their patients): without a bias, then
    population.py's closed form (calibrated_stop_bias: exact if the stop probability were the same after
    every visit), then secant steps on the log odds through the last two rounds (stop_bias_secant), since
    it is not, until a round lands within CALIBRATION_TOLERANCE of train's visits per patient; a last
    secant step when none does. On DE-SynPUF 1-6 the closed form alone overshot (1.85 for train's 1.765);
    two rounds of 1,000 patients left the ten-epoch model with time at 1.817 against the holdout's 1.748."""
    m_train = float(np.mean([len(p.visits) for p in train]))
    n = calibration_patients(len(train))

    def visits_at(bias: float) -> float:
        spec = fill_demographics({"sampling": {"stop_bias": bias}}, population).body
        cohort = generate_cohort(bundle, spec, n, seed + CALIBRATION_SEED_OFFSET, batch_size=DEFAULT_BATCH_SIZE, device=device)
        return float(np.mean([len(p.visits) for p in cohort]))

    rounds = [(0.0, visits_at(0.0))]
    bias = calibrated_stop_bias(m_train, rounds[0][1])
    record = {"patients": n, "train_visits_per_patient": round(m_train, 4),
              "uncalibrated_visits_per_patient": round(rounds[0][1], 4), "closed_form_stop_bias": bias,
              "tolerance": CALIBRATION_TOLERANCE}
    while bias != 0.0 and len(rounds) < CALIBRATION_ROUNDS:
        rounds.append((bias, visits_at(bias)))
        if abs(rounds[-1][1] - m_train) <= CALIBRATION_TOLERANCE * m_train:
            break
        (b0, v0), (b1, v1) = rounds[-2:]
        bias = stop_bias_secant(m_train, b0, v0, b1, v1)
        if bias == b1:  # the secant cannot move: another round would repeat this one
            break
    if len(rounds) > 1:
        record["closed_form_visits_per_patient"] = round(rounds[1][1], 4)
    record["rounds"] = [{"stop_bias": b, "visits_per_patient": round(v, 4)} for b, v in rounds]
    record["stop_bias"] = bias
    return replace(population, stop_bias=bias), record


def check_cohort(bundle, population, train: list, heldout: list, seed: int, device) -> dict:
    """CHECK_PATIENTS patients of the learned population, evaluated against the held-out patients."""
    if len(heldout) < MIN_HELDOUT:
        return {"skipped": f"{len(heldout)} held-out patients (fewer than {MIN_HELDOUT})"}
    t0 = time.time()
    spec = fill_demographics({}, population).body
    synthetic = generate_cohort(bundle, spec, CHECK_PATIENTS, seed, device=device)
    report = build_report(synthetic, sample(train, REFERENCE_PATIENTS, seed), heldout,
                          config=EvaluationConfig(seed=seed, n_subsamples=1, model_patients=None),
                          generator={"spec": spec})
    return {"patients": len(synthetic), "seed": seed, "reference_train_patients": min(len(train), REFERENCE_PATIENTS),
            "heldout_patients": len(heldout), "verdict": report.overall().model_dump(), "passed": report.passed,
            "demographics": {k: m.passed for k, m in report.demographics.items()}, "seconds": round(time.time() - t0, 3)}


def card_warnings(card: dict) -> list[str]:
    ppl = card["perplexity"]
    if not ppl.get("worse_than_unigram"):
        return []
    return [(f"held-out perplexity {ppl['ppl']:.2f} is not below the unigram baseline's {ppl['baseline_ppl']:.2f} "
             f"({ppl['heldout']}, {ppl['patients']} patients): the model predicts codes no better than their "
             f"frequencies; train longer or on more data")]


def finish(out, train: list, heldout: list, heldout_name: str, result, config, source: dict | None, device) -> dict:
    """Write population.json and card.json into the checkpoint `out` (its best weights); returns the card."""
    t0 = time.time()
    bundle = ckpt.load_checkpoint(Path(out), device)
    population, calibration = calibrate_stop(bundle, population_of(train), train, config.seed, device)
    ckpt.write_extra(out, ckpt.POPULATION, population.to_dict())
    card = {
        "data": {"source": source or "not given (records passed in memory)",
                 "splits": {"train": split_summary(train), heldout_name: split_summary(heldout)}},
        "preset": config.preset, "mode": config.mode, "epochs": config.epochs, "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch, "status": result.status, "steps": result.steps,
        "training_seconds": round(result.seconds, 3), "code_systems": sorted(bundle[1].code_systems),
        "population": population.to_dict(), "stop_calibration": calibration,
        "perplexity": perplexity_figures(bundle, heldout, heldout_name, config.seed, config.batch_size, device),
        "check_cohort": check_cohort(bundle, population, train, heldout, config.seed, device),
    }
    card["warnings"] = card_warnings(card)
    card["card_seconds"] = round(time.time() - t0, 3)
    ckpt.write_extra(out, ckpt.CARD, card)
    return card
