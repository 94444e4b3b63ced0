"""Demographic prompts: age (standardised number) and sex (category) -> prompt vectors of the model width.

Each feature goes through a small "reparameterised" network (a hidden bottleneck of `prompt_hidden`,
128 in the reference) that outputs `prompt_length` vectors; as in the reference the feature prompts are
concatenated along the sequence, giving `2 * prompt_length` vectors that are prepended to the token
embeddings. PromptBart holds two of these, one for the encoder and one for the decoder.

Caveat of the reference's age network: LayerNorm right after Linear(1, hidden) sees a*w + b, which for
large |a| normalises to about sign(a) * w: the age must be standardised (config.age_mean/age_sd from the
training split, as demographics_to_tensors does) or the prompt hardly changes with age.
"""
from __future__ import annotations

import torch
from torch import nn


class DemographicPrompt(nn.Module):
    def __init__(self, d_model: int, prompt_length: int = 1, hidden: int = 128, n_sexes: int = 2):
        super().__init__()
        self.d_model, self.prompt_length = d_model, prompt_length
        # age: Linear -> LayerNorm -> Linear (continuous feature)
        self.age = nn.Sequential(nn.Linear(1, hidden), nn.LayerNorm(hidden), nn.Linear(hidden, prompt_length * d_model))
        # sex: Embedding -> Linear (categorical feature)
        self.sex = nn.Sequential(nn.Embedding(n_sexes, hidden), nn.Linear(hidden, prompt_length * d_model))

    def forward(self, age: torch.Tensor, sex: torch.Tensor) -> torch.Tensor:
        """age (B,) float standardised, sex (B,) long 0=M 1=F -> (B, 2*prompt_length, d_model)."""
        B = age.shape[0]
        a = self.age(age.to(self.age[0].weight.dtype).view(B, 1)).view(B, self.prompt_length, self.d_model)
        s = self.sex(sex.long()).view(B, self.prompt_length, self.d_model)
        return torch.cat([a, s], dim=1)
