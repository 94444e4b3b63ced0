"""The report that ships with every cohort: synthetic vs train, beside holdout vs train (the limit).

    report = build_report(synthetic, train, holdout, model_scorer=None)
    open("report.json", "w").write(report.to_json(indent=2))

All cohorts are encoded once against one shared code index (counts.py); every section reads those
matrices. Measures that move with sample size are scored on synthetic subsamples of the holdout's
size (value = their mean, spread = their std) and on the whole cohort (full).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from promptehr.model.codes import category_of
from promptehr.model.evaluation import by_size, detection, fidelity, privacy, timeline, utility, validity
from promptehr.model.evaluation.counts import (
    Encoded,
    align,
    build_index,
    category_matrix,
    encode,
    patient_matrix,
    subset,
)
from promptehr.model.evaluation.demographics import demographics_section, requested_population
from promptehr.model.evaluation.model_scores import ModelScorer, model_section
from promptehr.model.evaluation.phenotypes import ccs_title, group_matrix
from promptehr.model.evaluation.schema import (
    CohortSummary,
    DataSummary,
    EvaluationConfig,
    FidelityBySize,
    Measure,
    ModelScores,
    PhenotypeScore,
    PrivacyRecords,
    Report,
    ReportWarning,
    Timeline,
    Verdict,
)
from promptehr.model.evaluation.sources import source_warnings
from promptehr.model.evaluation.thresholds import THRESHOLDS, threshold
from promptehr.model.patient import Patient


def measure(section: str, name: str, value, limit=None, *, reference=None, **extra) -> Measure:
    t = threshold(section, name)
    return Measure(value=value, limit=limit, threshold=t.value, passed=t.passes(value, reference, limit),
                   limit_pass=t.passes(limit, reference, limit), direction=t.direction, reference=reference, **extra)


def summary(enc: Encoded) -> CohortSummary:
    return CohortSummary(patients=enc.n_patients, visits=enc.n_visits, codes=int(enc.codes_per_visit.sum()),
                         distinct_codes=int((enc.visits.getnnz(axis=0) > 0).sum()))


def _mean_spread(values: list) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals))


def equal_size_samples(n_from: int, n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """k subsamples of size n without replacement; the whole cohort once if it is not larger than n."""
    if n_from <= n or n == 0:
        return [np.arange(n_from)]
    return [np.sort(rng.choice(n_from, n, replace=False)) for _ in range(k)]


def fidelity_section(tr: Encoded, ho: Encoded, sy: Encoded, cats, cfg: EvaluationConfig, rng, figures: dict) -> dict:
    st_tr, st_ho, st_sy = (fidelity.stats(e, cats) for e in (tr, ho, sy))
    limit = fidelity.prevalence_measures(st_tr, st_ho)
    full = fidelity.prevalence_measures(st_tr, st_sy)
    samples = equal_size_samples(sy.n_patients, ho.n_patients, cfg.n_subsamples, rng)
    subs = [fidelity.prevalence_measures(st_tr, fidelity.stats(subset(sy, rows), cats)) for rows in samples]
    out = {}
    for name in fidelity.PREVALENCE_MEASURES:
        value, spread = _mean_spread([s[name] for s in subs])
        out[name] = measure("fidelity", name, value, limit[name], spread=spread, full=full[name], n=len(samples))
    lengths_limit = fidelity.length_measures(tr, ho)
    lengths = fidelity.length_measures(tr, sy)
    train_means = fidelity.length_measures(tr, tr)
    for name, value in lengths.items():
        ref = train_means[name] if name.endswith("_mean") else None
        out[name] = measure("fidelity", name, value, lengths_limit[name], reference=ref)
    out["detection_auroc"] = detection_measure(tr, ho, sy, cats, cfg.seed, rng)
    figures["by_size"] = by_size.fidelity_by_size(st_tr, ho, sy, cats, rng)
    figures.update(
        code_prevalence={k: s.code_visits / max(s.n_visits, 1) for k, s in (("train", st_tr), ("holdout", st_ho), ("synthetic", st_sy))},
        pair_prevalence={k: _pairs(st_tr, s) for k, s in (("holdout", st_ho), ("synthetic", st_sy))},
    )
    return out


def detection_measure(tr: Encoded, ho: Encoded, sy: Encoded, cats, seed: int, rng) -> Measure:
    """Holdout vs synthetic, beside holdout vs an equal-size train sample (two real samples: the limit)."""
    members = np.sort(rng.choice(tr.n_patients, min(ho.n_patients, tr.n_patients), replace=False))
    return measure("fidelity", "detection_auroc", detection.detection_auroc(ho, sy, cats, seed),
                   detection.detection_auroc(ho, subset(tr, members), cats, seed), ideal=0.5)


def _pairs(train: fidelity.Stats, other: fidelity.Stats):
    _, a, b = align(train.pair_keys, train.pair_visits, other.pair_keys, other.pair_visits)
    return a / max(train.n_visits, 1), b / max(other.n_visits, 1)


def validity_section(train: list[Patient], holdout: list[Patient], synthetic: list[Patient],
                     ho: Encoded, sy: Encoded, codes: list[str], categories=None) -> dict:
    vocab = {c for p in train for v in p.visits for c in v}
    limit = validity.validity_measures(holdout, patient_matrix(ho), codes, vocab)
    value = validity.validity_measures(synthetic, patient_matrix(sy), codes, vocab, categories)
    return {name: measure("validity", name, value[name], limit[name]) for name in value}


def privacy_section(train: list[Patient], holdout: list[Patient], synthetic: list[Patient],
                    tr: Encoded, ho: Encoded, sy: Encoded, rng, figures: dict, times: bool = False) -> dict:
    copies = privacy.exact_copy_rates(synthetic, train, times)
    copies_limit = privacy.exact_copy_rates(holdout, train, times)
    # Equal sizes: a train sample as large as the holdout, so that chance is 0.5 for AUC and share.
    n = min(ho.n_patients, tr.n_patients)
    members = np.sort(rng.choice(tr.n_patients, n, replace=False))
    p_t, p_h, p_s = patient_matrix(subset(tr, members)), patient_matrix(ho), patient_matrix(sy)
    if times:
        p_t = privacy.with_time_items(p_t, [train[i] for i in members])
        p_h, p_s = privacy.with_time_items(p_h, holdout), privacy.with_time_items(p_s, synthetic)
    s_to_t, t_to_s = privacy.nearest(p_s, p_t)
    s_to_h, h_to_s = privacy.nearest(p_s, p_h)
    same = np.sort(rng.choice(sy.n_patients, min(n, sy.n_patients), replace=False))
    figures.update(distances={"train_to_synthetic": t_to_s, "holdout_to_synthetic": h_to_s, "synthetic_to_train": s_to_t})
    return {
        "exact_copy_rate": measure("privacy", "exact_copy_rate", copies["exact_copy_rate"], copies_limit["exact_copy_rate"]),
        "exact_copy_rate_multivisit": measure("privacy", "exact_copy_rate_multivisit", copies["exact_copy_rate_multivisit"],
                                              copies_limit["exact_copy_rate_multivisit"]),
        "mia_auc": measure("privacy", "mia_auc", privacy.mia_auc(t_to_s, h_to_s), ideal=0.5),
        "closer_to_train_share": measure("privacy", "closer_to_train_share", privacy.closer_to_train_share(s_to_t, s_to_h), ideal=0.5),
        "nnaar": measure("privacy", "nnaar", privacy.nnaar(p_t, p_h, p_s[same]), ideal=0.0),
    }


def timeline_section(train: list[Patient], holdout: list[Patient], synthetic: list[Patient],
                     figures: dict) -> tuple[Timeline, list[ReportWarning]]:
    """The timeline section (evaluation/timeline.py) and a warning per cohort of which only some records
    carry times. Measures with a threshold in thresholds.py get a verdict; the rest are informational."""
    times = {"train": timeline.times_of(train), "holdout": timeline.times_of(holdout),
             "synthetic": timeline.times_of(synthetic)}
    learned, measured, note = timeline.status(times["synthetic"], times["train"], times["holdout"])
    measures = {}
    if measured:
        limit = timeline.timeline_measures(times["train"], times["holdout"])
        own_train = timeline.timeline_measures(times["train"], times["train"])
        for name, value in timeline.timeline_measures(times["train"], times["synthetic"]).items():
            ref = own_train[name] if name in timeline.OWN_VALUES else None
            measures[name] = (measure("timeline", name, value, limit[name], reference=ref)
                              if name in THRESHOLDS["timeline"] else Measure(value=value, limit=limit[name], reference=ref))
    if any(t.timed for t in times.values()):
        figures["timeline"] = {"gaps": {k: t.gaps for k, t in times.items()}, "stays": {k: t.stays for k, t in times.items()}}
    about = {"synthetic": "the cohort", "train": "the train split", "holdout": "the holdout"}
    warnings = [ReportWarning(kind="timeline_partial", about=about[name], message=message, value=share)
                for name, message, share in timeline.partial_messages(times)]
    section = Timeline(learned=learned, measured=measured, note=note, measures=measures,
                       timed_records={k: t.timed for k, t in times.items()})
    return section, warnings


def utility_section(tr: Encoded, ho: Encoded, sy: Encoded, codes: list[str], cfg: EvaluationConfig, figures: dict) -> dict:
    groups, names = group_matrix(codes)
    scores = utility.utility_measures(tr, ho, sy, groups, names, labels=cfg.utility_labels, seed=cfg.seed)
    figures["phenotypes"] = [PhenotypeScore(title=ccs_title(r["ccs"]), **r) for r in scores["phenotypes"]]
    n = len(scores["phenotypes"])
    return {
        "tstr_auroc": measure("utility", "tstr_auroc", scores["tstr_auroc"], scores["trtr_auroc"], n=n),
        "trtr_auroc": Measure(value=scores["trtr_auroc"], n=n),
        # TRTR fit on as many train records as the cohort has (`full`: on the whole train): the size's share of the gap
        "trtr_equal_size_auroc": Measure(value=scores["trtr_equal_size_auroc"], full=scores["trtr_auroc"], n=n,
                                         train_patients=scores["equal_size_patients"]),
    }


def demographics_of(synthetic: list[Patient], train: list[Patient], requested: dict | None, generator: dict | None):
    """The demographics section against `requested`, the cohort spec (default: generator["spec"]; without
    one, the training split) -> (measures, {"requested", "synthetic"})."""
    if not synthetic:
        return {}, None
    spec = requested if requested is not None else (generator or {}).get("spec")
    return demographics_section(synthetic, requested_population(spec, train))


def build_report(synthetic: list[Patient], train: list[Patient], holdout: list[Patient], *,
                 config: EvaluationConfig | None = None, model_scorer: ModelScorer | None = None,
                 generator: dict | None = None, seeds: dict | None = None, split_seed: int | None = None,
                 synthetic_categories: list[list[list[str]]] | None = None, model_counts: dict[str, float] | None = None,
                 requested: dict | None = None, model_card: dict | None = None,
                 progress: Callable[[str], None] | None = None) -> Report:
    """Compare `synthetic` and `holdout` with `train`.

    `progress`, when given, is called with each section's name as it starts (the CLI's progress bar).
    `synthetic_categories`, for hierarchical output: the category generated for each code
    ([patient][visit][code]), checked by validity's category_mismatch_rate. `model_counts`: the model's
    training code counts (vocab.json), checked against the real data's source (sources.py). `requested`:
    see demographics_of. `model_card`: the model's card.json, shown as it is. `config.privacy_times`:
    privacy compares times too; a ValueError (before any work) when some record has none."""
    cfg = config or EvaluationConfig()
    if cfg.privacy_times and (problem := privacy.untimed_problem({"synthetic": synthetic, "train": train, "holdout": holdout})):
        raise ValueError(problem)
    rng = np.random.default_rng(cfg.seed)
    seconds: dict[str, float] = {}
    figures: dict = {}
    t0 = time.perf_counter()

    index = build_index(train, holdout, synthetic)
    codes = list(index)
    cats, _ = category_matrix(codes, category_of)
    tr, ho, sy = (encode(c, index) for c in (train, holdout, synthetic))
    seconds["encode"] = time.perf_counter() - t0

    def timed(name, fn, *args):
        if progress is not None:
            progress(name)
        start = time.perf_counter()
        out = fn(*args)
        seconds[name] = time.perf_counter() - start
        return out

    sections = {
        "fidelity": timed("fidelity", fidelity_section, tr, ho, sy, cats, cfg, rng, figures),
        "validity": timed("validity", validity_section, train, holdout, synthetic, ho, sy, codes, synthetic_categories),
        "privacy": timed("privacy", privacy_section, train, holdout, synthetic, tr, ho, sy, rng, figures, cfg.privacy_times),
        "utility": timed("utility", utility_section, tr, ho, sy, codes, cfg, figures),
    }
    time_section, timeline_warnings = timed("timeline", timeline_section, train, holdout, synthetic, figures)
    scores = ModelScores(**timed("model", model_section, model_scorer, holdout, cfg.model_patients, cfg.seed)) \
        if model_scorer is not None else None
    figures.update(
        codes=codes,
        lengths={k: (e.visits_per_patient, e.codes_per_visit) for k, e in (("train", tr), ("holdout", ho), ("synthetic", sy))},
        demographics={k: (e.age, e.female) for k, e in (("train", tr), ("holdout", ho), ("synthetic", sy))},
    )
    demo, population = demographics_of(synthetic, train, requested, generator)
    seconds["total"] = time.perf_counter() - t0
    # A timeline that was not measured has no verdict, so it stays out of `passed` rather than passing.
    judged = {**sections, **({"timeline": time_section.measures} if time_section.measured else {})}
    report = Report(
        generator=generator, seeds=seeds or {}, split_seed=split_seed, evaluation=cfg,
        data=DataSummary(train=summary(tr), holdout=summary(ho), synthetic=summary(sy)),
        model=scores, utility_phenotypes=figures["phenotypes"], fidelity_by_size=FidelityBySize(**figures["by_size"]),
        passed=(passed := {name: all(m.passed for m in sec.values() if m.passed is not None) for name, sec in judged.items()}),
        verdict=Verdict.of(passed),
        warnings=[*source_warnings(synthetic, train, holdout, model_counts, cfg.seed), *timeline_warnings],
        timeline=time_section, privacy_records=PrivacyRecords(
            with_times=cfg.privacy_times, note=privacy.WITH_TIMES if cfg.privacy_times else privacy.CODES_ONLY),
        seconds={k: round(v, 3) for k, v in seconds.items()},
        demographics=demo, population=population, model_card=model_card,
        **sections,
    )
    report._figures = figures
    return report
