"""Cohorts as sparse matrices: the one encoding that every measure of the report reads.

A cohort (list of Patient) becomes a binary visit-by-code CSR matrix plus the patient each visit
belongs to. Every count the report needs (code prevalence, same-visit pairs, visit-to-visit
transitions, categories, patient code sets) is a sparse product on it, never a Python loop over
pairs. All cohorts of one report share one code index so their vectors line up.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from promptehr.model.patient import Patient


def build_index(*cohorts: list[Patient]) -> dict[str, int]:
    """One column per distinct code over all cohorts, in order of first appearance."""
    index: dict[str, int] = {}
    for patients in cohorts:
        for p in patients:
            for visit in p.visits:
                for code in visit:
                    if code not in index:
                        index[code] = len(index)
    return index


@dataclass
class Encoded:
    """A cohort as arrays. Visits of one patient are contiguous rows of `visits`, in time order."""

    visits: sp.csr_matrix  # (n_visits, n_codes) 0/1: the distinct codes of each visit
    visit_patient: np.ndarray  # (n_visits,) row of the patient each visit belongs to
    visit_start: np.ndarray  # (n_patients,) first visit row of each patient
    visits_per_patient: np.ndarray  # (n_patients,)
    codes_per_visit: np.ndarray  # (n_visits,) length of each visit as given (duplicates included)
    age: np.ndarray  # (n_patients,)
    female: np.ndarray  # (n_patients,) bool

    @property
    def n_patients(self) -> int:
        return len(self.visits_per_patient)

    @property
    def n_visits(self) -> int:
        return self.visits.shape[0]

    @property
    def n_codes(self) -> int:
        return self.visits.shape[1]


def encode(patients: list[Patient], index: dict[str, int]) -> Encoded:
    """Encode a cohort against a shared index (codes missing from the index are an error)."""
    cols: list[int] = []
    indptr = [0]
    lengths: list[int] = []
    vpp = np.zeros(len(patients), dtype=np.int64)
    for i, p in enumerate(patients):
        vpp[i] = len(p.visits)
        for visit in p.visits:
            # dict.fromkeys drops duplicate codes so the matrix stays 0/1; the raw length is kept apart
            cols.extend(index[c] for c in dict.fromkeys(visit))
            indptr.append(len(cols))
            lengths.append(len(visit))
    n_visits = len(indptr) - 1
    data = np.ones(len(cols), dtype=np.float32)
    visits = sp.csr_matrix((data, np.asarray(cols, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
                           shape=(n_visits, len(index)))
    start = np.zeros(len(patients), dtype=np.int64)
    if len(patients):
        start[1:] = np.cumsum(vpp)[:-1]
    return Encoded(
        visits=visits,
        visit_patient=np.repeat(np.arange(len(patients)), vpp),
        visit_start=start,
        visits_per_patient=vpp,
        codes_per_visit=np.asarray(lengths, dtype=np.int64),
        age=np.asarray([p.age for p in patients], dtype=np.float64),
        female=np.asarray([p.sex == "F" for p in patients], dtype=bool),
    )


def visit_rows(enc: Encoded, rows: np.ndarray) -> np.ndarray:
    """Visit row numbers of the given patients, each patient's visits kept contiguous and in order."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = enc.visits_per_patient[rows]
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(enc.visit_start[rows], lengths) + np.arange(lengths.sum()) - offsets


def subset(enc: Encoded, rows: np.ndarray) -> Encoded:
    """The cohort restricted to some patients (used for equal-size subsamples)."""
    rows = np.asarray(rows, dtype=np.int64)
    v = visit_rows(enc, rows)
    vpp = enc.visits_per_patient[rows]
    start = np.zeros(len(rows), dtype=np.int64)
    if len(rows):
        start[1:] = np.cumsum(vpp)[:-1]
    return Encoded(
        visits=enc.visits[v],
        visit_patient=np.repeat(np.arange(len(rows)), vpp),
        visit_start=start,
        visits_per_patient=vpp,
        codes_per_visit=enc.codes_per_visit[v],
        age=enc.age[rows],
        female=enc.female[rows],
    )


def patient_matrix(enc: Encoded) -> sp.csr_matrix:
    """(n_patients, n_codes) 0/1: the set of codes a patient has over all visits (for distances)."""
    owner = sp.csr_matrix(
        (np.ones(enc.n_visits, dtype=np.float32), (enc.visit_patient, np.arange(enc.n_visits))),
        shape=(enc.n_patients, enc.n_visits),
    )
    m = (owner @ enc.visits).tocsr()
    m.data[:] = 1.0
    return m


def category_matrix(codes: list[str], category_of) -> tuple[sp.csr_matrix, list[str]]:
    """(n_codes, n_categories) 0/1 map from code column to its category column."""
    cats: dict[str, int] = {}
    col = np.asarray([cats.setdefault(category_of(c), len(cats)) for c in codes], dtype=np.int64)
    m = sp.csr_matrix((np.ones(len(codes), dtype=np.float32), (np.arange(len(codes)), col)),
                      shape=(len(codes), len(cats)))
    return m, list(cats)


def binarize(m: sp.spmatrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m)
    m.data = (m.data > 0).astype(np.float32)
    m.eliminate_zeros()
    return m


def transitions(enc: Encoded) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers (t, t+1) of consecutive visits of the same patient."""
    same = enc.visit_patient[1:] == enc.visit_patient[:-1]
    prev = np.flatnonzero(same)
    return prev, prev + 1


def keyed(m: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """A sparse square count matrix as sorted (key = row * n + col, count) arrays."""
    c = sp.coo_matrix(m)
    keys = c.row.astype(np.int64) * m.shape[1] + c.col.astype(np.int64)
    order = np.argsort(keys)
    return keys[order], c.data[order].astype(np.float64)


def pair_counts(enc: Encoded) -> tuple[np.ndarray, np.ndarray]:
    """Visits containing each unordered code pair {i < j}: upper triangle of V^T V."""
    return keyed(sp.triu(enc.visits.T @ enc.visits, k=1))


def transition_counts(enc: Encoded) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive-visit pairs with code i in visit t and code j in visit t+1 (i == j included)."""
    prev, nxt = transitions(enc)
    return keyed(enc.visits[prev].T @ enc.visits[nxt])


def align(keys_a: np.ndarray, vals_a: np.ndarray, keys_b: np.ndarray, vals_b: np.ndarray):
    """Two keyed vectors on the union of their keys, missing = 0."""
    keys = np.union1d(keys_a, keys_b)
    a = np.zeros(len(keys))
    b = np.zeros(len(keys))
    a[np.searchsorted(keys, keys_a)] = vals_a
    b[np.searchsorted(keys, keys_b)] = vals_b
    return keys, a, b
