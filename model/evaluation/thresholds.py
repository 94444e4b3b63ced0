"""Every pass/fail threshold of the report, in one place, each with the reason for its value.

`direction` says how a value passes: "min" (value >= t), "max" (value <= t), "rel" (the value is
within a relative distance t of the training data's own value, |value - train| / train <= t), or
"gap" (the value is at most t below its limit, value >= limit - t: for scores whose attainable level
depends on the data, such as TSTR AUROC against TRTR).
Thresholds are absolute so that a report means the same thing from one cohort to the next; they were
set so that a real held-out sample of 2,000 DE-SynPUF patients passes every one of them but the sex
rule (that synthetic public file draws codes without regard to sex), and a cohort that copies its
training data fails privacy. docs/evaluation.md lists the measured limits.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    value: float
    direction: str  # "min" | "max" | "rel"
    why: str

    def passes(self, x: float | None, reference: float | None = None, limit: float | None = None) -> bool | None:
        if x is None:
            return None
        if self.direction == "gap":
            return None if limit is None else bool(x >= limit - self.value)
        if self.direction == "min":
            return bool(x >= self.value)
        if self.direction == "max":
            return bool(x <= self.value)
        if reference is None or reference == 0:
            return None
        return bool(abs(x - reference) / abs(reference) <= self.value)


THRESHOLDS: dict[str, dict[str, Threshold]] = {
    "fidelity": {
        "unigram_r2": Threshold(0.8, "min", "HALO-style per-visit code prevalence; held-out DE-SynPUF reaches 0.995 at 2,000 patients, 0.8 leaves room for sampling noise but not for a wrong frequency profile"),
        "cooccurrence_r2": Threshold(0.5, "min", "pair prevalence is much noisier at equal (holdout) size; held-out DE-SynPUF reaches 0.89, half the variance explained is the floor for a usable cohort"),
        "transition_r2": Threshold(0.4, "min", "visit-to-visit transitions are the sparsest counts (few patients have 2+ visits); held-out DE-SynPUF is 0.75"),
        "category_r2": Threshold(0.85, "min", "3-digit categories pool codes, so they are the least noisy prevalence; held-out DE-SynPUF is 0.997"),
        "js_divergence": Threshold(0.1, "max", "Jensen-Shannon divergence (base 2, the square of scipy's distance) of code frequencies; held-out DE-SynPUF is 0.032 at 2,000 patients, mostly rare-code noise"),
        "top100_overlap": Threshold(0.6, "min", "share of the 100 most frequent training codes also in the cohort's top 100; held-out DE-SynPUF is 0.94"),
        "cooccurrence_supported_share": Threshold(0.5, "min", "share of within-visit pair occurrences seen >= 5 times in training; held-out DE-SynPUF is 0.59; below half, most pairs are combinations real data rarely shows"),
        "visits_per_patient_mean": Threshold(0.2, "rel", "within 20% of the training mean"),
        "codes_per_visit_mean": Threshold(0.2, "rel", "within 20% of the training mean"),
        "visits_per_patient_ks": Threshold(0.15, "max", "KS statistic of the visits-per-patient distributions; 0.15 is a visible but tolerable shape difference"),
        "codes_per_visit_ks": Threshold(0.15, "max", "KS statistic of the codes-per-visit distributions"),
        "detection_auroc": Threshold(0.6, "max", "cross-validated AUROC of a classifier telling holdout records from synthetic ones (synthcity / SDMetrics detection); two real samples are at ~0.5, above 0.6 the records give themselves away"),
    },
    "validity": {
        "sex_violation_rate": Threshold(0.01, "max", "share of patients with a code the rules forbid for their sex; generation masks these codes, so 1% allows only rare rule gaps (DE-SynPUF itself, a synthetic file with independently drawn codes, is at ~7% and fails: the limit row shows it)"),
        "age_violation_rate": Threshold(0.01, "max", "share of patients with a code the rules forbid at their age"),
        "duplicate_code_rate": Threshold(0.0, "max", "share of visits listing a code twice; decoding forbids it, so any is a bug"),
        "unknown_code_rate": Threshold(0.001, "max", "share of code slots neither in their system's table (ICD-9-CM table, ICD-10-CM release) nor in the training vocabulary: invented codes"),
        "category_mismatch_rate": Threshold(0.001, "max", "share of code slots whose category is not a known category of their system, ICD-9-CM or ICD-10-CM (or, for hierarchical output, not the category generated for it)"),
    },
    "privacy": {
        "exact_copy_rate": Threshold(0.05, "max", "real data has some natural duplicates (one short visit with common codes); above 5% the generator is replaying records"),
        "exact_copy_rate_multivisit": Threshold(0.01, "max", "records with >= 2 visits or >= 5 codes are almost never duplicated in real data, so copies of them are memorisation"),
        "mia_auc": Threshold(0.6, "max", "distance-based membership inference: 0.5 is chance (0.52 for held-out DE-SynPUF patients, 0.87 for training copies); above 0.6 an attacker tells training members from non-members"),
        "closer_to_train_share": Threshold(0.55, "max", "against a train sample as large as the holdout an independent cohort is closer to train half the time (ties count half; 0.51 for held-out DE-SynPUF patients); the share is diluted because only the sampled members can be found (copying every training record moves it by about n_holdout / (2 n_train)), so the margin is small"),
        "nnaar": Threshold(0.05, "max", "nearest-neighbour adversarial accuracy risk (Yale et al. 2020): test minus train adversarial accuracy, ~0 when the generator does not memorise (0.007 for held-out DE-SynPUF patients, 0.08 for a cohort of training copies)"),
    },
    "timeline": {
        # Measured: DE-SynPUF samples 1-6, 1,990 holdout against 15,566 train patients (split seed 0; 1,489 and 11,904 gaps).
        "gap_ks": Threshold(0.15, "max", "KS statistic of the days between consecutive visits, the same band as the length KS: held-out DE-SynPUF is 0.029; gaps all 30% longer are 0.084 (the Wasserstein distance beside it says by how many days)"),
        "stay_ks": Threshold(0.15, "max", "KS statistic of the lengths of stay: held-out DE-SynPUF is 0.015; every stay one day longer is 0.168 and fails"),
        "readmit_30d": Threshold(0.2, "rel", "share of gaps <= 30 days within 20% of train's, as the length means: held-out DE-SynPUF 0.262 for train's 0.256 (2%)"),
    },
    "utility": {
        "tstr_auroc": Threshold(0.03, "gap", "mean AUROC over CCS phenotypes predicted from the rest of the record, trained on synthetic and tested on the real holdout, may be at most 0.03 below the same classifier trained on real train (TRTR): how predictable phenotypes are depends on the data, so only the gap is the generator's. On DE-SynPUF (TRTR 0.718) 10,000 copies of train are 0.004 below and a cohort that shuffles codes across patients (visit lengths kept, which carry much of the signal there) 0.025 below; trtr_equal_size_auroc is TRTR at the cohort's size"),
    },
}


def threshold(section: str, name: str) -> Threshold:
    return THRESHOLDS[section][name]
