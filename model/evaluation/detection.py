"""Detection: can a classifier tell real records from synthetic ones? (synthcity's and SDMetrics' detection)

One row per patient: the multi-hot codes and 3-digit categories of the whole record, log(1 + visits),
log(1 + code slots), mean codes per visit / 10, age / 100 and sex (1 = female). A logistic regression
(liblinear) is trained to tell the two cohorts apart, with the same number of rows of each; the score
is the AUROC of its out-of-fold decision values over stratified 5-fold cross-validation. 0.5: the
classifier cannot tell them apart; 1: every record gives itself away. The report scores the holdout
against an equal-size synthetic subsample, and, as the limit, the holdout against an equal-size train
sample (two real samples: ~0.5).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from promptehr.model.evaluation.counts import Encoded, binarize, patient_matrix

FOLDS = 5


def record_features(enc: Encoded, categories: sp.csr_matrix) -> sp.csr_matrix:
    """(n_patients, n_codes + n_categories + 5): codes, categories, lengths, demographics."""
    codes = patient_matrix(enc)
    slots = np.bincount(enc.visit_patient, weights=enc.codes_per_visit, minlength=enc.n_patients)
    per_visit = slots / np.maximum(enc.visits_per_patient, 1)
    dense = np.c_[np.log1p(enc.visits_per_patient), np.log1p(slots), per_visit / 10.0, enc.age / 100.0,
                  enc.female.astype(np.float64)]
    return sp.hstack([codes, binarize(codes @ categories), sp.csr_matrix(dense)], format="csr")


def detection_auroc(real: Encoded, other: Encoded, categories: sp.csr_matrix, seed: int = 0) -> float | None:
    """Cross-validated AUROC of real (0) vs other (1); the larger cohort is subsampled to the smaller's size."""
    rng = np.random.default_rng(seed)
    n = min(real.n_patients, other.n_patients)
    if n < FOLDS:
        return None
    parts = []
    for enc in (real, other):
        x = record_features(enc, categories)
        parts.append(x[np.sort(rng.choice(enc.n_patients, n, replace=False))] if enc.n_patients > n else x)
    x = sp.vstack(parts, format="csr")
    y = np.r_[np.zeros(n), np.ones(n)]
    model = LogisticRegression(C=1.0, solver="liblinear", max_iter=200, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = cross_val_predict(model, x, y, cv=StratifiedKFold(FOLDS, shuffle=True, random_state=seed),
                                  method="decision_function")
    return float(roc_auc_score(y, score))
