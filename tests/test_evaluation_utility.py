"""Utility (TSTR vs TRTR on CCS phenotypes) on cohorts whose diagnoses come in clinical clusters, and the
CCS mapping for both code systems."""
import numpy as np

from promptehr.model.evaluation import utility
from promptehr.model.evaluation.counts import build_index, encode
from promptehr.model.evaluation.phenotypes import ccs_group, group_matrix
from promptehr.model.patient import Patient

# three clusters of codes from different CCS groups: a patient draws most codes from one cluster
CLUSTERS = [["4019", "4280", "42731", "41401"],  # hypertension, heart failure, dysrhythmia, coronary (98, 108, 106, 101)
            ["25000", "2724", "2449", "2859"],  # diabetes, lipids, thyroid, anemia (49, 53, 48, 59)
            ["486", "496", "5990", "5849"]]  # pneumonia, COPD, UTI, renal failure (122, 127, 159, 157)


def clustered(n, seed, prefix):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cluster = CLUSTERS[rng.integers(3)]
        codes = [c for c in cluster if rng.random() < 0.6] or [cluster[0]]
        out.append(Patient(f"{prefix}{i}", float(rng.integers(30, 90)), "FM"[i % 2], [codes]))
    return out


def scores(train, holdout, synth):
    index = build_index(train, holdout, synth)
    groups, names = group_matrix(list(index))
    return utility.utility_measures(*(encode(c, index) for c in (train, holdout, synth)), groups, names)


def test_tstr_matches_trtr_when_synthetic_keeps_the_clusters():
    s = scores(clustered(800, 0, "t"), clustered(400, 1, "h"), clustered(800, 2, "s"))
    assert s["trtr_auroc"] > 0.8
    assert abs(s["tstr_auroc"] - s["trtr_auroc"]) < 0.03
    assert len(s["phenotypes"]) == 10
    assert all({"ccs", "tstr_auroc", "trtr_auroc", "holdout_positives"} <= set(r) for r in s["phenotypes"])


def test_shuffling_codes_across_patients_lowers_tstr():
    train = clustered(800, 0, "t")
    s = scores(train, clustered(400, 1, "h"), utility.shuffled(clustered(800, 2, "s"), 3))
    assert s["tstr_auroc"] < s["trtr_auroc"] - 0.15


def test_the_target_groups_codes_are_not_features():
    # hypertension (4019, 4011: both CCS 98) is added at random to records that are otherwise alike:
    # without its own codes (and their count) nothing predicts it
    rng = np.random.default_rng(0)
    def cohort(n, prefix):
        return [Patient(f"{prefix}{i}", 50.0, "F", [["25000"] + (["4019", "4011"] if rng.random() < 0.5 else [])])
                for i in range(n)]
    s = scores(cohort(400, "t"), cohort(200, "h"), cohort(400, "s"))
    row = next(r for r in s["phenotypes"] if r["ccs"] == "98")
    assert row["trtr_auroc"] == 0.5  # constant features: every record scores the same


def test_ccs_groups_for_icd9_icd10_and_parent_codes():
    assert ccs_group("4019") == "98" and ccs_group("401.9") == "98"
    assert ccs_group("icd10:I10") == "98"  # through the CMS GEM to ICD-9-CM
    assert ccs_group("icd10:E119") == ccs_group("25000") == "49"
    assert ccs_group("2765") == "55"  # non-billable parent: its children's one group
    assert ccs_group("icd10:ZZZ99") is None and ccs_group("XYZ") is None
    m, names = group_matrix(["4019", "icd10:I10", "XYZ"])
    assert names == ["98"] and m.toarray().tolist() == [[1.0], [1.0], [0.0]]


def test_trtr_at_the_cohorts_size_fits_on_a_train_sample_as_large():
    train, holdout = clustered(800, 0, "t"), clustered(400, 1, "h")
    small = scores(train, holdout, clustered(100, 2, "s"))  # the cohort is an eighth of train
    assert small["equal_size_patients"] == 100
    rows = small["phenotypes"]
    assert any(r["trtr_equal_size_auroc"] != r["trtr_auroc"] for r in rows)  # fit on other records
    assert small["trtr_equal_size_auroc"] == np.mean([r["trtr_equal_size_auroc"] for r in rows])
    # the sample is the train records the seed picks: fitting on exactly those gives the same figures
    picked = [train[i] for i in utility.equal_size_rows(800, 100, 0)]
    alone = scores(picked, holdout, clustered(100, 2, "s"))
    by_ccs = {r["ccs"]: r["trtr_auroc"] for r in alone["phenotypes"]}
    shared = [r for r in rows if r["ccs"] in by_ccs]
    assert len(shared) >= 5 and all(abs(r["trtr_equal_size_auroc"] - by_ccs[r["ccs"]]) < 1e-9 for r in shared)
    # a cohort as large as train or larger: the whole train, the same figure
    big = scores(train, holdout, clustered(800, 2, "s"))
    assert big["equal_size_patients"] == 800 and big["trtr_equal_size_auroc"] == big["trtr_auroc"]
