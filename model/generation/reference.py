"""The sampler's specification: one patient at a time, the model's logits at every step (nanoGPT's `generate`).

model/generation/sampler.py gives exactly these records (tests/test_reference_sampler.py). A step runs
the decoder on the last token (transformers' plain KV cache), computes the logits of the columns it
chooses among, masks what the grammar and the rules forbid (constraints.py) and draws with the
patient's uniform at that position (streams.py, draw.py). The columns: the whole vocabulary (flat);
the specials and categories, or the codes of the category just drawn (hierarchical). Forced tokens
(required codes, a reconstruction prefix) are emitted as given, and must be allowed too.

Equal records need equal bits, so the logits are computed as the batched sampler computes them:
- the patient runs as ROWS identical rows (row 0 is read): the CPU kernels behind nn.Linear round a
  row the same way in any product of at least LINEAR_ROWS rows, and otherwise on another path
  (measured: one row alone changes the logits of most draws in the last bits);
- a code's logit is the row's own product with the code's embedding (PromptBart.lm_head_at), not
  a column of the full LM head: those per-row products round otherwise than the matrix product on
  some CPUs (measured on an AMD EPYC, torch 2.13: about 1 window logit in 12 differs in the last bit);
- the encoder and decoder in opts.precision, their output cast to float32 for the head (precision.py);
- `shared` forced tokens go into the first decoder call, with <s>, the rest one per step: attention
  over several new positions in one call rounds otherwise (in the last bits) than one position per
  call. The batched sampler puts there the forced tokens all rows of its batch share: all of them
  (the default here) when every row forces the same tokens, as in a cohort.
"""
from __future__ import annotations

import numpy as np
import torch

from promptehr.model.generation.constraints import (
    CATEGORY,
    DONE,
    Limits,
    advance,
    allowed_next,
    category_windows,
    init_state,
)
from promptehr.model.generation.draw import SamplingOptions, draw, draw_codes, window_index
from promptehr.model.generation.head import LINEAR_ROWS
from promptehr.model.generation.precision import decoder_precision
from promptehr.model.generation.streams import uniforms
from promptehr.model.nn.promptbart import demographics_to_tensors

ROWS = LINEAR_ROWS


@torch.inference_mode()
def generate(sampler, age: float, sex: str, key: int, opts: SamplingOptions, forced=(), limits: Limits | None = None,
             shared: int | None = None) -> list[int]:
    """Token ids after <s> up to and including </s> of one patient (`key`: streams.row_key) with a
    Sampler's model, vocabulary and rules."""
    L, m, dev = sampler.layout, sampler.model, sampler.device
    limits = limits or sampler.limits()
    w = category_windows(L)
    windows = (torch.as_tensor(w[0], device=dev), w[1]) if w is not None else None
    age_t, sex_t = demographics_to_tensors([age] * ROWS, [sex] * ROWS, sampler.config, dev)
    with decoder_precision(opts.precision, dev):
        enc = m.encode(torch.zeros(ROWS, 0, dtype=torch.long, device=dev), None, age_t, sex_t)  # prompts only
    state = init_state(L, torch.from_numpy(sampler.allowed_mask([sex], [age])).to(dev))
    keys = np.asarray([key], dtype=np.uint64)
    out = list(forced[: len(forced) if shared is None else shared])
    for t in out:
        state = advance(state, torch.tensor([t], device=dev), L, limits)
    new, past = [L.bos] + out, None
    while int(state.phase[0]) != DONE:
        with decoder_precision(opts.precision, dev):
            hidden, past = m.decoder_hidden(torch.tensor([new] * ROWS, device=dev), enc, age_t, sex_t, past)  # (ROWS, t, D)
        if len(out) < len(forced):
            tok = forced[len(out)]
        else:
            u = torch.from_numpy(uniforms(keys, len(out) + 1))  # position: index after <s>
            tok = next_token(m, hidden[:, -1].float(), state, L, limits, u, opts, sampler.freq_logits, windows)
        state = advance(state, torch.tensor([tok], device=dev), L, limits)
        out.append(tok)
        new = [tok]
    return out


def next_token(m, h: torch.Tensor, state, layout, limits: Limits, u: torch.Tensor, opts: SamplingOptions,
               freq_logits: torch.Tensor, windows: tuple[torch.Tensor, int] | None) -> int:
    """The token the patient draws from the decoder output of its copies h (ROWS, D), its state (1 row)
    and its uniform u (1,). `windows`: constraints.category_windows as tensors (hierarchical)."""
    ok = allowed_next(state, layout, limits)  # (1, V)
    if not layout.hierarchical:
        return int(draw(m.lm_head(h)[:1], ok, layout, u, opts)[0])
    if int(state.phase[0]) != CATEGORY:  # a special or a category: the columns before the codes
        co = layout.code_offset
        return int(draw(m.lm_head(h)[:1, :co], ok[:, :co], layout, u, opts)[0])
    # a code of the category just drawn: the logits of its window, one product per row (see the docstring)
    idx, inside = window_index(windows, state.category, layout.vocab_size)  # (1, width)
    logits = m.lm_head_at(h, idx.expand(h.shape[0], -1))[:1]
    return int(draw_codes(logits, ok.gather(1, idx) & inside, idx, layout, u, opts, freq_logits)[0])
