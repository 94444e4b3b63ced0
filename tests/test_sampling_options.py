"""SamplingOptions: the bounds the sampler honours, checked where the options are made (CLI, API, worker)."""
from __future__ import annotations

import math

import pytest

from promptehr.model.generation.cohort import CohortSpec
from promptehr.model.generation.options import DEFAULT_FREQUENCY_MIX, MAX_STOP_BIAS, SamplingOptions


@pytest.mark.parametrize("bias", [-MAX_STOP_BIAS - 0.5, MAX_STOP_BIAS + 1, math.nan, math.inf, -math.inf])
def test_stop_bias_out_of_range_is_refused(bias):
    with pytest.raises(ValueError, match="stop_bias must be in"):
        SamplingOptions(stop_bias=bias)


@pytest.mark.parametrize("bias", [-MAX_STOP_BIAS, -0.4, 0.0, MAX_STOP_BIAS])
def test_stop_bias_in_range_is_kept(bias):
    assert SamplingOptions(stop_bias=bias).stop_bias == bias


@pytest.mark.parametrize("mix", [-0.1, 1.01, math.nan])
def test_frequency_mix_out_of_range_is_refused(mix):
    with pytest.raises(ValueError, match=r"frequency_mix must be in \[0, 1\]"):
        SamplingOptions(frequency_mix=mix)


def test_a_spec_names_the_sampling_fields_it_knows():
    assert CohortSpec.from_dict({"sampling": {"stop_bias": -0.5}}).sampling.stop_bias == -0.5
    with pytest.raises(ValueError, match="stop_bias"):  # the message lists every field, the new one too
        CohortSpec.from_dict({"sampling": {"stop": 1}})


def test_the_default_is_no_nucleus_cut():
    """top_p 1.0, chosen by bench/sweep_sampling.py (docs/evaluation.md, step 1)."""
    assert SamplingOptions().top_p == 1.0 and SamplingOptions().stop_bias == 0.0


def test_the_default_mixes_half_the_code_draw_from_training_frequencies():
    """frequency_mix: absent, the model's default (0.5 for a hierarchical model, chosen by bench/sweep_sampling.py,
    docs/evaluation.md step 8; 0 for a flat one), resolved in stage 2's draw (generation/draw.py)."""
    assert SamplingOptions().frequency_mix is None and DEFAULT_FREQUENCY_MIX == 0.5


@pytest.mark.parametrize("precision", ["fp16", "float32", "", "BF16"])
def test_an_unknown_precision_is_refused(precision):
    with pytest.raises(ValueError, match="precision must be 'bf16' or 'fp32'"):
        SamplingOptions(precision=precision)


def test_the_default_precision_is_bf16_and_a_spec_can_ask_for_fp32():
    """bf16: the decoder under bfloat16 autocast (docs/evaluation.md, "bf16 as the default"); fp32 on request."""
    assert SamplingOptions().precision == "bf16"
    assert CohortSpec.from_dict({"sampling": {"precision": "fp32"}}).sampling.precision == "fp32"
    assert CohortSpec.from_dict({}).to_dict()["sampling"]["precision"] == "bf16"  # recorded in the cohort's spec
