"""Co-occurrence counts on a hand-made example; targets; the penalty is the expected rare mass and differentiable."""
import numpy as np
import torch

from promptehr.model.training.batches import collate
from promptehr.model.nn.cooccurrence import (
    common_pairs,
    cooc_targets,
    cooccurrence_penalty,
    count_cooccurrences,
)
from promptehr.model.training.corruption import empty_encoder
from promptehr.model.patient import Patient
from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.tokens.vocab import Vocabulary

VISITS = [["A1", "B1", "C1"], ["A1", "B1"], ["A1", "B1"], ["B1", "C1"], ["D1"]]


def vocab():
    return Vocabulary(categories=["A1", "B1", "C1", "D1"], codes=["A1", "B1", "C1", "D1"])  # codes are their own category


def test_counts_by_hand():
    v = vocab()
    c = count_cooccurrences(VISITS + [["A1", "Z9"]], v).toarray()  # Z9 unknown: ignored
    a, b, cc, d = 0, 1, 2, 3
    assert c[a, b] == c[b, a] == 3 and c[a, cc] == 1 and c[b, cc] == 2 and c[d].sum() == 0
    assert np.all(np.diag(c) == 0)
    common = common_pairs(count_cooccurrences(VISITS, v), threshold=2).toarray()
    assert common[a, b] and common[b, cc] and not common[a, cc]


def test_targets_and_penalty():
    v = vocab()
    common = common_pairs(count_cooccurrences(VISITS, v), threshold=2)
    tk = Tokenizer(v, "flat")
    seq = tk.encode([["A1", "B1", "C1"], ["B1"]])  # <s> <v> A B C </v> <v> B </v> </s>
    batch = collate([empty_encoder(seq)], [0.0], [0], common, v.code_offset)
    cooc = batch.cooc
    labels = batch.labels[0].tolist()  # <v> A B C </v> <v> B </v> </s>
    # positions with a non-empty prefix: B (prefix A) and C (prefix A, B); the first code of a visit has none
    assert [labels[p] for p in cooc.positions.tolist()] == [v.id_of("B1"), v.id_of("C1")]
    allowed = {(r, t) for r, t in zip(cooc.allowed_row.tolist(), cooc.allowed_token.tolist())}
    assert allowed == {(0, v.id_of("B1"))}  # only B is common with A; nothing is common with both A and B

    torch.manual_seed(0)
    logits = torch.randn(batch.labels.numel(), len(v), requires_grad=True)
    pen = cooccurrence_penalty(logits, cooc, v.code_offset)
    p = logits.softmax(-1).detach()
    codes = slice(v.code_offset, None)
    pos = cooc.positions.tolist()
    expect = ((p[pos[0], codes].sum() - p[pos[0], v.id_of("B1")]) + p[pos[1], codes].sum()) / 2
    assert torch.allclose(pen, expect, atol=1e-6)
    pen.backward()
    assert logits.grad is not None and logits.grad[pos].abs().sum() > 0
    assert logits.grad[[i for i in range(len(logits)) if i not in pos]].abs().sum() == 0


def test_hierarchical_prefix_skips_categories():
    ps = [Patient("1", 50, "F", [["4019", "25000", "4280"]] * 6)]
    v = Vocabulary.build(ps)
    common = common_pairs(count_cooccurrences([vis for p in ps for vis in p.visits], v), threshold=5)
    tk = Tokenizer(v, "hierarchical")
    labels = np.array([tk.encode(ps[0].visits[:1])[1:]])
    cooc = cooc_targets(labels, common, v.code_offset)
    assert [v.token_of(int(labels[0, p])) for p in cooc.positions] == ["25000", "4280"]
    assert len(cooc.allowed_row) == 3  # 25000 and 4280 allowed after 4019; 4280 after both
