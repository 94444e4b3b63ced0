"""Examples -> padded tensors, and the (deterministic, length-bucketed) order of batches in an epoch."""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from promptehr.model.nn.cooccurrence import CoocTargets, cooc_targets
from promptehr.model.tokens.vocab import PAD
from promptehr.model.training.corruption import Example

IGNORE = -100  # labels ignored by cross-entropy


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, S) encoder tokens, right-padded with <pad>
    attention_mask: torch.Tensor  # (B, S)
    decoder_input_ids: torch.Tensor  # (B, T) target[:-1]
    decoder_attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T) target[1:], IGNORE on padding
    scored: torch.Tensor  # (B, T) bool: label positions measured by the perplexity
    age: torch.Tensor  # (B,) standardised
    sex: torch.Tensor  # (B,) 0=M 1=F
    cooc: CoocTargets | None = None

    def to(self, device) -> Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: (v.to(device) if v is not None else None) for k, v in moved.items()}
        return Batch(**moved)

    def model_inputs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "decoder_input_ids": self.decoder_input_ids, "decoder_attention_mask": self.decoder_attention_mask,
                "age": self.age, "sex": self.sex, "labels": self.labels, "cooc": self.cooc}

    @property
    def n_tokens(self) -> int:
        """Real (non-pad) tokens through encoder and decoder: the unit of training throughput."""
        return int(self.attention_mask.sum()) + int(self.decoder_attention_mask.sum())


def _pad(rows: list[list[int]], value: int, width: int | None = None) -> np.ndarray:
    width = max((len(r) for r in rows), default=0) if width is None else width
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def collate(examples: list[Example], ages, sexes, common=None, code_offset: int = 0) -> Batch:
    """`ages` standardised floats, `sexes` 0/1; `common` (thresholded co-occurrence CSR) enables the
    co-occurrence targets."""
    enc = _pad([e.encoder for e in examples], PAD)
    dec = _pad([e.target[:-1] for e in examples], PAD)
    labels = _pad([e.target[1:] for e in examples], IGNORE)
    scored = _pad([[int(s) for s in e.scored[1:]] for e in examples], 0).astype(bool)
    cooc = cooc_targets(labels, common, code_offset) if common is not None else None
    return Batch(
        input_ids=torch.from_numpy(enc), attention_mask=torch.from_numpy((enc != PAD).astype(np.int64)),
        decoder_input_ids=torch.from_numpy(dec), decoder_attention_mask=torch.from_numpy((labels != IGNORE).astype(np.int64)),
        labels=torch.from_numpy(labels), scored=torch.from_numpy(scored),
        age=torch.as_tensor(np.asarray(ages, dtype=np.float32)), sex=torch.as_tensor(np.asarray(sexes, dtype=np.int64)),
        cooc=cooc,
    )


def batch_order(lengths, batch_size: int, rng: np.random.Generator, bucket: int = 50) -> list[np.ndarray]:
    """Shuffled index batches; within chunks of `bucket` batches, examples of similar length are grouped
    to cut padding. Deterministic given the generator state."""
    lengths = np.asarray(lengths)
    perm = rng.permutation(len(lengths))
    batches = []
    chunk = batch_size * bucket
    for s in range(0, len(perm), chunk):
        part = perm[s:s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]
