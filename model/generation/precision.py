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
import os

import torch

# bfloat16 linear layers run as oneDNN matmul primitives, one JIT-compiled per input shape, and the sampler's
# batches take many row counts (rows finish, stragglers are set aside): the primitive cache (1,024 entries by
# default) made `promptehr generate` (tiny preset, bf16) peak at 963.6 MiB for 10,000 patients and 1,519.1
# MiB for 100,000 (1.58x, bench/bench_generate_memory.py; fp32 1.20x). 64 entries: 832.5 -> 1,192.5 MiB
# (1.43x, inside the 1.5x limit; 16 entries 1.45x, the rest is the C allocator's), at the same speed (4,096
# patients of the DE-SynPUF 1-6 small model: 25.5 / 26.4 s against 26.0 / 26.1 s). oneDNN reads it when it
# makes its first primitive: set here, it holds in `promptehr generate` (measured above: no primitive comes
# before the first sampling), and in any process whose first oneDNN work is sampling; a value the user set wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")


def decoder_precision(precision: str, device: torch.device):
    """The context the sampler runs the model's encoder and decoder calls in."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)
