"""Model scores: the one-pass perplexity equals training's heldout_perplexity, the median of medians,
the seeded holdout subsample and its size in the report."""
import numpy as np
import pytest
import torch

from promptehr.model.evaluation import build_report
from promptehr.model.evaluation.code_nll import heldout_scores, median_of_medians
from promptehr.model.evaluation.model_scores import model_patients_for, scored_patients
from promptehr.model.nn.config import model_config
from promptehr.model.nn.promptbart import PromptBart
from promptehr.model.patient import Patient
from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.tokens.vocab import Vocabulary
from promptehr.model.training.perplexity import heldout_perplexity

CODES = ["4019", "25000", "4280", "41401", "5849", "V5861", "E8889", "2724", "486", "5990", "42731", "2859", "311", "53081"]


@pytest.fixture(scope="module")
def model():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    vocab = Vocabulary.build([Patient("a", 50, "F", [CODES])])
    cfg = model_config("tiny", vocab_size=len(vocab), code_offset=vocab.code_offset, max_length=64)
    torch.manual_seed(0)
    yield PromptBart(cfg).eval(), vocab
    torch.set_num_threads(before)


def patients(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Patient(f"p{i}", float(rng.integers(20, 90)), "FM"[i % 2],
                    [[str(c) for c in rng.choice(CODES, rng.integers(1, 6), replace=False)] for _ in range(rng.integers(1, 4))])
            for i in range(n)]


@pytest.mark.parametrize("mode", ["hierarchical", "flat"])
def test_one_pass_equals_training_perplexity(model, mode):
    m, vocab = model
    tok = Tokenizer(vocab, mode)
    pats = patients(40)
    mine = heldout_scores(m, vocab, tok, pats, batch_size=16)
    ref = heldout_perplexity(m, vocab, tok, pats, batch_size=32)
    for a, b in (("masked", "ppl_masked"), ("next_visit", "ppl_next_visit"), ("all", "ppl"), ("baseline_masked", "baseline_ppl_masked")):
        assert mine[a] == pytest.approx(ref[b], rel=1e-6), a
    assert mine["n_scored_masked"] == ref["n_scored_masked"] and mine["n_scored"] == ref["n_scored"]
    assert mine["masked_median_of_medians"] > 1 and mine["next_visit_median_of_medians"] > 1


def test_median_of_medians():
    # examples 0-7 form group 0 (ppl 1, 2, 3 -> median 2), 8-15 group 1 (10), 16 group 2 (4, 100 -> 52)
    nll = np.log([1.0, 2.0, 3.0, 10.0, 4.0, 100.0])
    example = np.array([0, 3, 7, 8, 16, 16])
    assert median_of_medians(nll, example) == pytest.approx(10.0)
    assert median_of_medians(nll[:0], example[:0]) is None


def test_subsample_is_seeded_and_recorded():
    holdout = patients(30)
    a, b = scored_patients(holdout, 10, 0), scored_patients(holdout, 10, 0)
    assert [p.id for p in a] == [p.id for p in b] and len(a) == 10
    assert [p.id for p in a] != [p.id for p in scored_patients(holdout, 10, 1)]
    assert scored_patients(holdout, 100, 0) == holdout
    assert model_patients_for("cuda:1") > model_patients_for("cpu")

    class Counting:
        def perplexity(self, pats):
            self.n = len(pats)
            return {"masked": 2.0}

        def reconstruct(self, prefixes):
            return prefixes

    from promptehr.model.evaluation.schema import EvaluationConfig
    s = Counting()
    report = build_report(patients(50, 2), patients(100, 1), holdout, model_scorer=s,
                          config=EvaluationConfig(model_patients=10))
    assert s.n == 10 and report.model.patients == 10 and report.model.holdout_patients == 30
