"""Perplexity: the within-category code NLL by hand, and held-out figures from a tiny trained model."""
import math

import pytest
import torch

from promptehr.model.nn.checkpoint import load_checkpoint
from promptehr.model.nn.config import train_config
from promptehr.model.training.perplexity import heldout_perplexity, within_category_nll
from promptehr.model.training.train import train
from tests.test_vocab import toy_patients

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: torch on one thread


def test_within_category_nll_by_hand():
    # vocab: 2 categories (ids 7, 8), 3 codes (ids 9, 10 in category 7; id 11 in category 8)
    logits = torch.tensor([[0.0] * 9 + [1.0, 2.0, 5.0]])
    code_category = torch.tensor([7, 7, 8])
    nll = within_category_nll(logits, torch.tensor([9]), 9, code_category, 7)
    assert math.isclose(float(nll), -math.log(math.exp(1) / (math.exp(1) + math.exp(2))), rel_tol=1e-6)
    assert float(within_category_nll(logits, torch.tensor([11]), 9, code_category, 7)) < 1e-6  # alone in its category


def test_heldout_perplexity_figures(tmp_path):
    tr = toy_patients(40, seed=2)
    train(tr, toy_patients(8, seed=3), train_config("tiny", epochs=2, batch_size=8), tmp_path / "m", device="cpu")
    model, vocab, tk, _ = load_checkpoint(tmp_path / "m")
    r = heldout_perplexity(model, vocab, tk, toy_patients(10, seed=4))
    assert r["n_scored"] == r["n_scored_masked"] + r["n_scored_next_visit"] > 0
    assert 1 < r["ppl"] < 1e4 and 1 < r["baseline_ppl"] < len(vocab)
