"""Within-visit code co-occurrence counts and the differentiable co-occurrence regulariser.

Counts: C[i, j] = number of training visits holding both code i and code j (code indices, i != j), a
scipy.sparse CSR matrix computed as X^T X from the visit x code incidence matrix X (vectorised).

Penalty: at every target position whose label is a code and whose visit already holds codes (the
prefix), the expected probability mass the model puts on code tokens that are *rare* with the prefix,
i.e. whose count with at least one prefix code is below `threshold`:

    penalty(t) = sum_j p_t(j) * rare_t(j) = sum_{j code} p_t(j) - sum_{j allowed_t} p_t(j)

where allowed_t = codes whose count with EVERY prefix code is >= threshold: the intersection of a few
sparse rows of the thresholded matrix, so it is built per batch as (row, token) pairs instead of a dense
(positions x codes) mask. The loss is the mean over such positions: an expectation under the predicted
distribution, differentiable in the logits (never a penalty on sampled or argmax codes).

Hierarchical mode: the penalty applies at code positions (the step that picks a code inside the chosen
category), where code-level co-occurrence is at stake; category steps are not penalised. The prefix is
the codes of the visit so far (category tokens are skipped).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from promptehr.model.tokens.vocab import END_VISIT, VISIT, Vocabulary


def count_cooccurrences(visits: Iterable[Sequence[str]], vocab: Vocabulary) -> sp.csr_matrix:
    """(n_codes, n_codes) int32 CSR of within-visit pair counts; zero diagonal; unknown codes ignored."""
    code_id, offset = vocab._code_id, vocab.code_offset
    visit_idx, code_idx = [], []
    n_visits = 0
    for v in visits:
        ids = [code_id[c] - offset for c in v if c in code_id]
        visit_idx.extend([n_visits] * len(ids))
        code_idx.extend(ids)
        n_visits += 1
    rows, cols = np.asarray(visit_idx, dtype=np.int64), np.asarray(code_idx, dtype=np.int64)
    x = sp.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(n_visits, vocab.n_codes))
    x.sum_duplicates()
    x.data[:] = 1  # a code counts once per visit
    c = (x.T @ x).tocsr()
    c.setdiag(0)
    c.eliminate_zeros()
    c.sort_indices()
    return c


def patient_visits(patients) -> list[Sequence[str]]:
    return [v for p in patients for v in p.visits]


def common_pairs(counts: sp.csr_matrix, threshold: int = 5) -> sp.csr_matrix:
    """The thresholded matrix: True where the pair was seen at least `threshold` times (sorted rows)."""
    common = (counts >= threshold).tocsr()
    common.sort_indices()
    return common


@dataclass
class CoocTargets:
    """Where the penalty applies, for one batch.

    positions: (N,) flat indices into the (B*T) label grid: code positions with a non-empty visit prefix
    allowed_row, allowed_token: (M,) pairs (row in 0..N-1, code token id) of codes NOT rare with the prefix
    """
    positions: torch.Tensor
    allowed_row: torch.Tensor
    allowed_token: torch.Tensor

    def to(self, device) -> CoocTargets:
        return CoocTargets(self.positions.to(device), self.allowed_row.to(device), self.allowed_token.to(device))


def cooc_targets(labels: np.ndarray, common: sp.csr_matrix, code_offset: int) -> CoocTargets:
    """labels (B, T) int (-100 = ignore) -> CoocTargets. Walks each row once; intersections of sorted rows."""
    indptr, indices = common.indptr, common.indices
    n_codes = common.shape[0]
    B, T = labels.shape
    positions, rows, toks = [], [], []
    for b in range(B):
        allowed = None  # None = empty prefix
        for t in range(T):
            tok = int(labels[b, t])
            if tok == VISIT or tok == END_VISIT:
                allowed = None
                continue
            code = tok - code_offset
            if not 0 <= code < n_codes:
                continue
            if allowed is not None:
                rows.append(np.full(len(allowed), len(positions), dtype=np.int64))
                toks.append(allowed + code_offset)
                positions.append(b * T + t)
            nbrs = indices[indptr[code]:indptr[code + 1]]
            allowed = nbrs if allowed is None else np.intersect1d(allowed, nbrs, assume_unique=True)
    cat = (lambda xs: torch.from_numpy(np.concatenate(xs)).long()) if rows else (lambda xs: torch.zeros(0, dtype=torch.long))
    return CoocTargets(torch.as_tensor(positions, dtype=torch.long), cat(rows), cat(toks))


def cooccurrence_penalty(flat_logits: torch.Tensor, cooc: CoocTargets, code_offset: int) -> torch.Tensor:
    """Mean over positions of the probability mass on code tokens rare with the visit prefix."""
    if cooc.positions.numel() == 0:
        return flat_logits.new_zeros(())
    probs = flat_logits[cooc.positions].float().softmax(-1)  # (N, V)
    code_mass = probs[:, code_offset:].sum(-1)  # (N,)
    allowed = probs[cooc.allowed_row, cooc.allowed_token]  # (M,)
    allowed_mass = torch.zeros_like(code_mass).index_add(0, cooc.allowed_row, allowed)
    return (code_mass - allowed_mass).clamp_min(0).mean()
