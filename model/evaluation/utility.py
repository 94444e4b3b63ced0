"""Utility: is a classifier trained on the cohort as useful on real patients as one trained on real data?

Task: predict the categories of a patient's last visit from the categories of the earlier visits plus
age and sex. Train on synthetic, test on the real holdout (TSTR) versus train on real train, test on
the same holdout (TRTR, the limit). Patients with a single visit have no history to predict from and
are left out of both training and testing.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from model.evaluation.counts import Encoded, binarize

TOP_LABELS = 20  # the most frequent last-visit categories of the training data


def task(enc: Encoded, categories: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(features, targets) for patients with >= 2 visits.

    features = multi-hot categories of all but the last visit, age / 100, sex (1 = female);
    targets = multi-hot categories of the last visit.
    """
    rows = np.flatnonzero(enc.visits_per_patient >= 2)
    last = enc.visit_start[rows] + enc.visits_per_patient[rows] - 1
    # history visits: every visit of a kept patient but its last
    lengths = enc.visits_per_patient[rows] - 1
    starts = enc.visit_start[rows]
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    history = np.repeat(starts, lengths) + np.arange(lengths.sum()) - offsets
    owner = sp.csr_matrix((np.ones(len(history), dtype=np.float32), (np.repeat(np.arange(len(rows)), lengths), history)),
                          shape=(len(rows), enc.n_visits))
    hist = binarize(owner @ enc.visits @ categories)
    demo = sp.csr_matrix(np.c_[enc.age[rows] / 100.0, enc.female[rows].astype(np.float64)])
    x = sp.hstack([hist, demo], format="csr")
    y = binarize(enc.visits[last] @ categories)
    return x, y


def top_labels(y_train: sp.csr_matrix, k: int = TOP_LABELS) -> np.ndarray:
    counts = np.asarray(y_train.sum(axis=0)).ravel()
    order = np.argsort(-counts, kind="stable")[:k]
    return order[counts[order] > 0]


def macro_auroc(x_fit, y_fit, x_test, y_test, labels: np.ndarray, seed: int = 0) -> float | None:
    """Mean AUROC over the labels with both classes in the test set.

    A label with one class in the training set gets a constant score (AUROC 0.5): a generator that
    never produces a category cannot teach the classifier about it.
    """
    y_fit = y_fit.tocsc()
    y_test = y_test.tocsc()
    aucs = []
    for j in labels:
        truth = y_test[:, j].toarray().ravel()
        if len(truth) == 0 or truth.min() == truth.max():
            continue
        target = y_fit[:, j].toarray().ravel()
        if len(target) == 0 or target.min() == target.max():
            aucs.append(0.5)
            continue
        model = LogisticRegression(C=1.0, solver="liblinear", max_iter=200, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x_fit, target)
        aucs.append(roc_auc_score(truth, model.decision_function(x_test)))
    return float(np.mean(aucs)) if aucs else None


def utility_measures(train: Encoded, holdout: Encoded, synth: Encoded, categories: sp.csr_matrix,
                     labels: int = TOP_LABELS, seed: int = 0) -> dict[str, float | None]:
    x_tr, y_tr = task(train, categories)
    x_ho, y_ho = task(holdout, categories)
    x_sy, y_sy = task(synth, categories)
    chosen = top_labels(y_tr, labels)
    return {
        "tstr_auroc": macro_auroc(x_sy, y_sy, x_ho, y_ho, chosen, seed),
        "trtr_auroc": macro_auroc(x_tr, y_tr, x_ho, y_ho, chosen, seed),
    }
