"""The decoder's arithmetic during sampling: bfloat16 autocast ("bf16") or float32 ("fp32").

Under "bf16" the encoder and decoder layers run in bfloat16 (torch.autocast: the linear layers; the
self-attention cache holds bfloat16, half the memory; attention itself stays float32 on CPU, where
bfloat16 SDPA is the slow kernel: model/nn/attention.py), and the decoder output is cast back to
float32 before the LM head, so the logits, the masks and every draw are float32 as before: the head is
a small share of a step and bfloat16 logits (3 significant digits) would shift the probabilities of
close tokens. A row's bits still depend on the row alone (the kernels' rounding is
the same in any batch of at least MIN_ROWS rows: tests/test_reference_sampler.py runs both).
"""
from __future__ import annotations

import contextlib

import torch


def decoder_precision(precision: str, device: torch.device):
    """The context the sampler runs the model's encoder and decoder calls in."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)
