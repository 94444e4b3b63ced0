"""Sampling options and the bounds the sampler honours, torch-free so that the API can check a spec
with the very class the worker builds (service/ never imports torch).

Temperature bounds: model/generation/draw.py divides float32 logits (shifted by the row max) by the
temperature, cast to float32. Under about 7e-46 the cast is 0 and every probability is NaN (the
issue's 1e-46 failed the job); over 3.4e38 it is inf and the division gives NaN again. Long before
either, the draw stops changing: at 0.01 a logit gap of 0.5 is odds of e^-50 (the arg-max, greedy),
and at 10 a gap of 5 is odds of 0.6 (near uniform over what top-k/top-p keep). So the documented
range is [0.01, 10].
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 10.0
# stop_bias: e^10 = 22,026 times the odds either way is past any calibration a cohort needs
MAX_STOP_BIAS = 10.0
CODE_SAMPLERS = ("model", "frequency")
# The decoder's arithmetic (model/generation/precision.py): "bf16" runs its layers under bfloat16 autocast,
# "fp32" in float32; the LM head and every draw are float32 either way.
PRECISIONS = ("bf16", "fp32")
# The model under-draws the long tail (distinct codes at equal size 84% of a real sample's on DE-SynPUF 1-6);
# the training frequencies carry the split's own tail. 0.5, chosen by bench/sweep_sampling.py (docs/evaluation.md,
# step 8; 0 / 0.15 / 0.3 / 0.4 / 0.5): distinct codes 84% -> 93%, code R^2 0.991 -> 0.992, pair R^2 0.877 both,
# detection AUROC 0.574 -> 0.552, NNAAR -0.021 (within 0.03).
DEFAULT_FREQUENCY_MIX = 0.5
# Rows the batched sampler carries side by side (finished ones replaced as they end), for the CLI, the
# worker, the notebook API and the stop calibration alike. The cohort is the same at every batch size. 4,096
# patients of the small preset (DE-SynPUF sample 1, one thread, a fresh process each): 44.6 / 43.4 s at 1,024
# for 54.4 / 56.6 s at 256 (peak RSS 1,060-1,163 MiB for 743-765); 512 and 2,048 within a few per cent of
# 1,024 (docs/evaluation.md, "Generation speed at these defaults").
DEFAULT_BATCH_SIZE = 1024


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0
    # 1.0 (no nucleus cut), chosen by bench/sweep_sampling.py on DE-SynPUF 1-6 (docs/evaluation.md): against
    # 0.95 it keeps the long tail (distinct codes at equal size 79% of the holdout's, was 51%), JS 0.037 (0.051)
    # and pair R^2 0.849 (0.819); the share of pairs train supports then matches the holdout's (0.598).
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    code_sampler: str = "model"  # hierarchical stage 2: "model" (conditioned) or "frequency" (training counts)
    # Hierarchical stage 2 with code_sampler "model": this share of the code's probability comes from the
    # training frequencies of the category's codes, the rest from the model (at its temperature). None: the
    # model's default, DEFAULT_FREQUENCY_MIX for a hierarchical model (draw.draw_codes), 0 for a flat one (no stage 2). 0: the model alone.
    frequency_mix: float | None = None
    # Added to the end-of-record logit where the record may end (after a visit): e^stop_bias times the odds
    # of stopping there. Negative: more visits per patient. The model under-produces visits (1.50 per
    # patient where DE-SynPUF's holdout has 1.75, docs/evaluation.md step 2): this calibrates that decision.
    stop_bias: float = 0.0
    # "bf16": the encoder and decoder layers under bfloat16 autocast, attention and the draws in float32
    # (model/generation/precision.py). 2,048 patients of a DE-SynPUF sample-1 small model at batch 1,024, one
    # thread, alternating: 5.58 s for fp32's 8.22 s (1.49x); every default together 1.28x the patients/s of the
    # settings before issue 14 (bench/bench_generate.py --settings), the fidelity of fp32's (docs/evaluation.md,
    # step 9). "fp32" gives the records of the float32 sampler.
    precision: str = "bf16"

    def __post_init__(self):
        if not MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must be in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not -MAX_STOP_BIAS <= self.stop_bias <= MAX_STOP_BIAS:  # (NaN fails both comparisons)
            raise ValueError(f"stop_bias must be in [{-MAX_STOP_BIAS:g}, {MAX_STOP_BIAS:g}], got {self.stop_bias}")
        if self.frequency_mix is not None and not 0 <= self.frequency_mix <= 1:  # (NaN fails it)
            raise ValueError(f"frequency_mix must be in [0, 1], got {self.frequency_mix}")
        if self.code_sampler not in CODE_SAMPLERS:
            raise ValueError(f"code_sampler must be 'model' or 'frequency', got {self.code_sampler!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be 'bf16' or 'fp32', got {self.precision!r}")
