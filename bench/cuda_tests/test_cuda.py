"""CUDA paths: the sampler's cohort does not depend on the batch size (64 vs 1024), a training run on
the GPU writes a checkpoint that loads, and bf16 autocast gives the fp32 loss within bf16 tolerance."""
from __future__ import annotations

import math

import pytest
import torch

from promptehr.model.data import load_patients
from promptehr.model.generation.cohort import CohortSpec, demographics
from promptehr.model.generation.draw import SamplingOptions
from promptehr.model.generation.sampler import Sampler
from promptehr.model.generation.streams import row_key
from promptehr.model.nn.checkpoint import load_checkpoint
from promptehr.model.nn.config import model_config, train_config
from promptehr.model.nn.promptbart import LossWeights, PromptBart
from promptehr.model.split import split_patients
from promptehr.model.tokens.layout import TokenLayout
from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.tokens.vocab import Vocabulary
from promptehr.model.training.perplexity import autocast
from promptehr.model.training.prepare import encode_patients, epoch_batches, train_batch
from promptehr.model.training.train import train

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def demo(shared_data):
    return split_patients(load_patients([str(shared_data / "mimic3-demo")]), 0)


def test_sampler_same_cohort_at_batch_64_and_1024(cuda, demo):
    vocab = Vocabulary.build(demo[0])
    cfg = model_config("small", vocab_size=len(vocab), code_offset=vocab.code_offset)
    torch.manual_seed(0)
    sampler = Sampler(PromptBart(cfg).eval(), vocab, cfg, cuda)
    limits = sampler.limits(max_visits=3, max_codes_per_visit=10)
    spec, n = CohortSpec(), 1024
    demo_rows = [demographics(spec, 7, i) for i in range(n)]
    ages, sexes, keys = [a for a, _ in demo_rows], [s for _, s in demo_rows], [row_key(7, i) for i in range(n)]
    small = sampler.generate_many(ages, sexes, keys, SamplingOptions(), limits=limits, batch_size=64)
    large = sampler.generate_many(ages, sexes, keys, SamplingOptions(), limits=limits, batch_size=1024)
    assert len(small) == n and small == large


def test_training_on_cuda_writes_a_checkpoint_that_loads(cuda, demo, tmp_path):
    train_set, val_set, _ = demo
    result = train(train_set, val_set, train_config("tiny", max_steps=6, epochs=1), tmp_path / "m", device="cuda")
    assert result.status == "completed" and result.steps == 6
    assert all(math.isfinite(line["train_loss"]) and math.isfinite(line["val_loss"]) for line in result.log)
    model, *_ = load_checkpoint(tmp_path / "m", "cuda")
    assert next(model.parameters()).device.type == "cuda"


def test_bf16_autocast_matches_fp32_loss(cuda, demo):
    train_set = demo[0]
    cfg = train_config("small")
    vocab = Vocabulary.build(train_set)
    mcfg = model_config("small", vocab_size=len(vocab), code_offset=vocab.code_offset)
    seqs, ages, sexes = encode_patients(train_set, Tokenizer(vocab, cfg.mode), mcfg)
    idx = epoch_batches(len(seqs), [len(s) for s in seqs], cfg, 0)[0]
    batch = train_batch(idx, seqs, ages, sexes, TokenLayout.of(vocab), cfg, 0, None).to(cuda)
    torch.manual_seed(0)
    model = PromptBart(mcfg).to(cuda).eval()
    model.loss_weights = LossWeights(**cfg.loss_weights())
    with torch.no_grad():
        fp32 = model(**batch.model_inputs())
        with autocast(cuda):
            bf16 = model(**batch.model_inputs())
    assert bf16.logits.dtype == torch.bfloat16 and fp32.logits.dtype == torch.float32
    assert float(bf16.loss) == pytest.approx(float(fp32.loss), rel=2e-2)
