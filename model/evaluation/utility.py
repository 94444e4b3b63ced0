"""Utility: is a classifier trained on the cohort as useful on real patients as one trained on real data?

Task: phenotypes, as CCS single-level diagnosis groups (phenotypes.py), predicted from the rest of the
record. For each phenotype, a patient is positive if any code of the group is in the record; the
features are the patient's other CCS groups (multi-hot over all visits, computed after the group's own
codes are removed, so the answer is never in the question), log(1 + other distinct codes),
log(1 + visits), age / 100 and sex (1 = female). The phenotypes are the
`labels` most common groups among training patients that have at least MIN_POSITIVES positive and
negative holdout patients. Train on synthetic, test on the real holdout (TSTR) versus train on real
train, test on the same holdout (TRTR, the limit); AUROC per phenotype, averaged.

TRTR is also fit on a seeded sample of train as large as the cohort (`trtr_equal_size_auroc`, when the
cohort is the smaller): how much a classifier learns grows with its training records, so this says how
much of a gap is the cohort's size rather than its quality. On DE-SynPUF 1-6 real train samples give
0.696 at 4,000 patients (three draws, 0.694-0.697), 0.712 at 10,000 (0.711-0.713), 0.718 whole (15,566).

Features, measured on DE-SynPUF samples 1-6 (15,566 train, 1,990 holdout patients, TRTR): other codes
0.642, other groups 0.679, groups + the two lengths 0.718 (10,000 training records copied: 0.714).
Groups pool codes that each occur in few patients, so the classifier overfits less. A generator that
shuffles codes across patients, lengths kept (`shuffled` below, seed 3; scripts/utility_by_size.py),
reaches 0.694 on the whole train's 15,566 records, 0.666 on 4,000 of them (three draws; real at that
size 0.696), 0.683 on 10,000 (real 0.712): about 0.029 below real at every size. On DE-SynPUF the
lengths carry much of the signal and a shuffle keeps them, so the 0.03 gap alone does not fail it here;
on data whose diagnoses co-occur it falls far further (the tests: 0.15 and more).

Why this task: the earlier one (last-visit categories from the earlier visits) has no signal on
DE-SynPUF even for real data (TRTR 0.504), so it could not tell a good generator from noise. Which
diagnoses come together in a patient is what a phenotype model learns from real data, and what a
generator that breaks co-occurrence (shuffling codes across patients) loses.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from promptehr.model.evaluation.counts import Encoded, binarize, patient_matrix
from promptehr.model.patient import Patient

PHENOTYPES = 10  # the most common CCS groups of the training patients
MIN_POSITIVES = 20  # positive and negative holdout patients a phenotype needs for a stable AUROC


def phenotype_targets(enc: Encoded, groups: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(patient code sets (n_patients, n_codes), patient phenotypes (n_patients, n_groups)), both 0/1."""
    codes = patient_matrix(enc)
    return codes, binarize(codes @ groups)


def features(codes: sp.csr_matrix, enc: Encoded, groups: sp.csr_matrix, drop: np.ndarray) -> sp.csr_matrix:
    """Without the code columns `drop` (the target group's codes): multi-hot groups (n_patients, n_groups),
    log1p(distinct codes), log1p(visits), age / 100, sex."""
    keep = np.ones(codes.shape[1], dtype=np.float32)
    keep[drop] = 0.0
    kept = codes @ sp.diags(keep)  # (n_patients, n_codes)
    n_codes = np.asarray(kept.sum(axis=1)).ravel()
    dense = np.c_[np.log1p(n_codes), np.log1p(enc.visits_per_patient), enc.age / 100.0, enc.female.astype(np.float64)]
    return sp.hstack([binarize(kept @ groups), sp.csr_matrix(dense)], format="csr")


def choose_phenotypes(y_train: sp.csr_matrix, y_holdout: sp.csr_matrix, k: int = PHENOTYPES) -> np.ndarray:
    """Columns of the k most common training phenotypes with MIN_POSITIVES positives and negatives in the holdout."""
    counts = np.asarray(y_train.sum(axis=0)).ravel()
    pos = np.asarray(y_holdout.sum(axis=0)).ravel()
    ok = (pos >= MIN_POSITIVES) & (y_holdout.shape[0] - pos >= MIN_POSITIVES) & (counts > 0)
    order = np.argsort(-counts, kind="stable")
    return order[ok[order]][:k]


def auroc(x_fit, y_fit, x_test, y_test, seed: int = 0) -> float:
    """AUROC on the test set of a logistic regression fit on (x_fit, y_fit); 0.5 when y_fit has one class
    (a generator that never produces a phenotype cannot teach the classifier about it)."""
    if len(y_fit) == 0 or y_fit.min() == y_fit.max():
        return 0.5
    model = LogisticRegression(C=1.0, solver="liblinear", max_iter=200, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x_fit, y_fit)
    return float(roc_auc_score(y_test, model.decision_function(x_test)))


def equal_size_rows(n_train: int, n_synth: int, seed: int) -> np.ndarray | None:
    """A seeded sample of n_synth train rows (sorted), or None when the cohort is not smaller than train."""
    if n_synth >= n_train or n_synth == 0:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_train, n_synth, replace=False))


def phenotype_scores(train: Encoded, holdout: Encoded, synth: Encoded, groups: sp.csr_matrix, names: list[str],
                     labels: int = PHENOTYPES, seed: int = 0) -> list[dict]:
    """Per chosen phenotype: {"ccs", "train_share", "holdout_positives", "synthetic_share", "tstr_auroc",
    "trtr_auroc", "trtr_equal_size_auroc"}."""
    (c_tr, y_tr), (c_ho, y_ho), (c_sy, y_sy) = (phenotype_targets(e, groups) for e in (train, holdout, synth))
    rows = equal_size_rows(c_tr.shape[0], c_sy.shape[0], seed)
    y_tr, y_ho, y_sy = y_tr.tocsc(), y_ho.tocsc(), y_sy.tocsc()
    groups_csc = groups.tocsc()
    out = []
    for j in choose_phenotypes(y_tr, y_ho, labels):
        drop = groups_csc[:, j].nonzero()[0]
        col = [y[:, j].toarray().ravel() for y in (y_tr, y_ho, y_sy)]
        x_tr, x_ho, x_sy = (features(c, e, groups, drop) for c, e in ((c_tr, train), (c_ho, holdout), (c_sy, synth)))
        out.append({"ccs": names[j], "train_share": float(col[0].mean()), "holdout_positives": int(col[1].sum()),
                    "synthetic_share": float(col[2].mean()) if len(col[2]) else 0.0,
                    "tstr_auroc": auroc(x_sy, col[2], x_ho, col[1], seed),
                    "trtr_auroc": auroc(x_tr, col[0], x_ho, col[1], seed)})
        out[-1]["trtr_equal_size_auroc"] = (out[-1]["trtr_auroc"] if rows is None else
                                            auroc(x_tr[rows], col[0][rows], x_ho, col[1], seed))
    return out


def utility_measures(train: Encoded, holdout: Encoded, synth: Encoded, groups: sp.csr_matrix, names: list[str],
                     labels: int = PHENOTYPES, seed: int = 0) -> dict:
    """{"tstr_auroc", "trtr_auroc", "trtr_equal_size_auroc"} = the means over phenotypes (None without one),
    "equal_size_patients" = the train records the last one fits on, "phenotypes" = the rows."""
    rows = phenotype_scores(train, holdout, synth, groups, names, labels, seed)
    mean = (lambda key: float(np.mean([r[key] for r in rows]))) if rows else (lambda key: None)
    n_train, n_synth = len(train.visits_per_patient), len(synth.visits_per_patient)
    return {"tstr_auroc": mean("tstr_auroc"), "trtr_auroc": mean("trtr_auroc"),
            "trtr_equal_size_auroc": mean("trtr_equal_size_auroc"),
            "equal_size_patients": n_train if equal_size_rows(n_train, n_synth, seed) is None else n_synth,
            "phenotypes": rows}


def shuffled(patients: list[Patient], seed: int) -> list[Patient]:
    """The null generator the measure must tell from a real one: each record keeps its demographics and
    visit lengths, its codes are drawn from the pool of all the records' codes (co-occurrence is lost)."""
    rng = np.random.default_rng(seed)
    pool = np.array([c for p in patients for v in p.visits for c in v])
    return [Patient(f"x{i}", p.age, p.sex, [list(dict.fromkeys(rng.choice(pool, len(v)).tolist())) for v in p.visits])
            for i, p in enumerate(patients)]
