"""BART's attention for PromptBart: transformers' SDPA, in float32 on CPU whatever the autocast.

Under bfloat16 autocast (the sampler's default precision, model/generation/precision.py) the linear
layers run in bfloat16, and on CPU so would SDPA, whose bfloat16 kernel is the slow one there: one query
per row over the cached positions, DE-SynPUF sample-1 small model, 1,024 patients at batch 1,024, one
thread (torch.profiler): SDPA 0.95 s in float32, 2.15 s in bfloat16, while the linear layers went
2.33 s -> 0.73 s. So on CPU the query, keys and values are cast to float32 and SDPA runs outside the
autocast (2,048 patients: 8.4 s fp32, 7.7 s all bfloat16, 5.6 s bfloat16 with float32 attention); its
output goes back to the caller's dtype. In float32 (training and evaluation on CPU, the "fp32" precision)
and on CUDA (fast bfloat16 attention kernels) it is transformers' SDPA unchanged. Registered with
transformers' AttentionInterface, the extension point for this: BART itself is not forked.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "promptehr_sdpa"


def sdpa_float32_on_cpu(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, **kwargs):
    """transformers' attention-function contract: (attn_output (B, T, H, d), attn_weights or None)."""
    if query.device.type != "cpu" or query.dtype == key.dtype == value.dtype == torch.float32:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    with torch.autocast("cpu", enabled=False):
        mask = attention_mask.float() if attention_mask is not None and attention_mask.is_floating_point() else attention_mask
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), mask, **kwargs)
    return out.to(query.dtype), weights


AttentionInterface.register(NAME, sdpa_float32_on_cpu)
# and SDPA's masks (causal, padding): transformers builds no mask at all for a name it has no mask function for
AttentionMaskInterface.register(NAME, sdpa_mask)
