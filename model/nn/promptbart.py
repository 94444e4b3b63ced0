"""PromptBart: transformers' BART encoder-decoder with demographic prompts and auxiliary age/sex heads.

    encoder input:  [enc_prompt(age, sex)] + embed(input_ids)          mask (B, P+S)
    decoder input:  [dec_prompt(age, sex)] + embed(decoder_input_ids)  causal; cross-attends to encoder
    logits:         decoder hidden at token positions (prompt positions dropped) @ shared embedding^T + bias

Training sequences: decoder_input_ids = target[:-1], labels = target[1:], target = `<s> <v> ... </s>`.
Generation therefore starts the decoder from `<s>` (id 0). The "empty" encoder input that training uses
is zero tokens, input_ids of shape (B, 0): the encoder then sees the prompt alone (a row padded out to
the batch width is the same thing). `<s> </s>` is accepted too but is not what training saw.

We use BartModel's encoder and decoder unchanged, passing inputs_embeds; nothing is forked. For generation the
sampler may pass a `cache_capacity` (self-attention cache layers that write into spare room instead of
concatenating every step: model/nn/kv_cache.py) and ask for logits of a few columns only (`lm_head_columns`,
`lm_head_at`). Attention is transformers' SDPA, kept in float32 on CPU under bfloat16 autocast
(model/nn/attention.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BartConfig, BartModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from promptehr.model.nn import attention
from promptehr.model.nn.config import ModelConfig
from promptehr.model.nn.cooccurrence import CoocTargets, cooccurrence_penalty
from promptehr.model.nn.kv_cache import PreallocatedCache
from promptehr.model.nn.prompts import DemographicPrompt
from promptehr.model.tokens.vocab import BOS, EOS, PAD


@dataclass
class EncoderState:
    hidden: torch.Tensor  # (B, P+S, D) encoder output, prompt positions included
    mask: torch.Tensor  # (B, P+S) 1 = attend


@dataclass
class ModelOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, T_dec, V), prompt positions dropped
    lm_loss: torch.Tensor | None = None
    age_loss: torch.Tensor | None = None
    sex_loss: torch.Tensor | None = None
    cooc_loss: torch.Tensor | None = None


@dataclass
class LossWeights:
    """Weights of the auxiliary losses beside the language-model loss. The values are TrainConfig's
    (`LossWeights(**train_config.loss_weights())`): the trainer and load_checkpoint set them."""
    age: float
    sex: float
    cooc: float
    label_smoothing: float  # training only; validation losses are plain NLL
    time: float = 1.0  # training only: weight of a time token's bin choice (its kind, gap or stay, weighs 1)

    @classmethod
    def none(cls) -> LossWeights:
        """The language-model loss alone, unsmoothed: a model built outside training has no run's weights."""
        return cls(age=0.0, sex=0.0, cooc=0.0, label_smoothing=0.0, time=1.0)


def bart_config(config: ModelConfig) -> BartConfig:
    return BartConfig(
        vocab_size=config.vocab_size, d_model=config.d_model,
        encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.attention_heads, decoder_attention_heads=config.attention_heads,
        encoder_ffn_dim=config.ffn_dim, decoder_ffn_dim=config.ffn_dim,
        max_position_embeddings=config.max_length + config.n_prompts,  # prompts take positions too
        dropout=config.dropout, attention_dropout=config.attention_dropout, activation_dropout=0.0,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, scale_embedding=False,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS,
        forced_bos_token_id=None, forced_eos_token_id=None, is_encoder_decoder=True,
        attn_implementation=attention.NAME,  # SDPA, in float32 on CPU under autocast (model/nn/attention.py)
    )


def demographics_to_tensors(ages, sexes, config: ModelConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ages in years and sexes ("M"/"F" or 0/1) -> (standardised age (B,) float32, sex (B,) long)."""
    age = (torch.as_tensor([float(a) for a in ages], dtype=torch.float32) - config.age_mean) / config.age_sd
    sex = torch.as_tensor([_sex_index(s) for s in sexes], dtype=torch.long)
    return age.to(device), sex.to(device)


def _sex_index(s) -> int:
    if isinstance(s, str):
        if s.upper() not in ("M", "F"):
            raise ValueError(f"sex must be 'M' or 'F', got {s!r}")
        return 0 if s.upper() == "M" else 1
    return int(s)


class PromptBart(nn.Module):
    def __init__(self, config: ModelConfig, bart: BartModel | None = None):
        super().__init__()
        self.config = config
        self.bart = bart if bart is not None else BartModel(bart_config(config))
        d, L, H = config.d_model, config.prompt_length, config.prompt_hidden
        self.encoder_prompt = DemographicPrompt(d, L, H)
        self.decoder_prompt = DemographicPrompt(d, L, H)
        self.final_logits_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.age_head = nn.Linear(d, 1)  # per decoder token: standardised age (MSE)
        self.sex_head = nn.Linear(d, 2)  # per decoder token: sex (cross-entropy)
        self.loss_weights = LossWeights.none()

    @property
    def n_prompts(self) -> int:
        return self.config.n_prompts

    # ---- building blocks ----------------------------------------------------------------------
    def _with_prompt(self, ids: torch.Tensor, mask: torch.Tensor | None, prompt: torch.Tensor):
        """ids (B, S) -> embeddings (B, P+S, D) and mask (B, P+S) with the prompt prepended."""
        B, S = ids.shape
        embeds = self.bart.shared(ids)  # (B, S, D), embed_scale applied by BART's embedding
        embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
        if mask is None:
            mask = torch.ones(B, S, dtype=torch.long, device=ids.device)
        mask = torch.cat([torch.ones(B, prompt.shape[1], dtype=mask.dtype, device=mask.device), mask], dim=1)
        return embeds, mask

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.bart.shared.weight, self.final_logits_bias)

    def lm_head_columns(self, hidden: torch.Tensor, stop: int) -> torch.Tensor:
        """Logits of token ids [0, stop) only: (B, D) -> (B, stop)."""
        return F.linear(hidden, self.bart.shared.weight[:stop], self.final_logits_bias[:stop])

    def lm_head_at(self, hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Logits of token ids idx (n, w), each row of hidden (n, D) at its own ids: (n, w)."""
        w = F.embedding(idx, self.bart.shared.weight)  # (n, w, D)
        return torch.bmm(w, hidden[:, :, None]).squeeze(2) + self.final_logits_bias[idx]

    # ---- public API ---------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, age: torch.Tensor,
               sex: torch.Tensor) -> EncoderState:
        """input_ids (B, S), S may be 0 -> EncoderState(hidden (B, P+S, D), mask (B, P+S))."""
        embeds, mask = self._with_prompt(input_ids, attention_mask, self.encoder_prompt(age, sex))
        hidden = self.bart.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return EncoderState(hidden=hidden, mask=mask)

    def decoder_hidden(self, decoder_input_ids, state: EncoderState, age, sex, past_key_values=None,
                       decoder_attention_mask=None, cache_capacity: int | None = None):
        """Decoder hidden states at the token positions (B, t_new, D) and the cache. On the first call,
        `cache_capacity` (positions, prompts included) makes the self-attention cache a PreallocatedCache
        with that much room to start with (it still grows past it)."""
        first = past_key_values is None
        if first:
            embeds, mask = self._with_prompt(decoder_input_ids, decoder_attention_mask, self.decoder_prompt(age, sex))
            cfg = self.bart.config
            own = PreallocatedCache(cfg.decoder_layers, cache_capacity) if cache_capacity else DynamicCache(config=cfg)
            past_key_values = EncoderDecoderCache(own, DynamicCache(config=cfg))
        else:
            embeds = self.bart.shared(decoder_input_ids)
            mask = None
            if decoder_attention_mask is not None:  # caller-tracked (B, past+new) mask without prompts
                B = decoder_attention_mask.shape[0]
                ones = torch.ones(B, self.n_prompts, dtype=decoder_attention_mask.dtype, device=embeds.device)
                mask = torch.cat([ones, decoder_attention_mask], dim=1)
        out = self.bart.decoder(
            inputs_embeds=embeds, attention_mask=mask, encoder_hidden_states=state.hidden,
            encoder_attention_mask=state.mask, cache=past_key_values, use_cache=True,
        )
        hidden = out.last_hidden_state
        if first:
            hidden = hidden[:, self.n_prompts:]  # drop prompt positions
        return hidden, out.cache

    def decode(self, decoder_input_ids: torch.Tensor, state: EncoderState, age: torch.Tensor, sex: torch.Tensor,
               past_key_values=None):
        """First call (past None): prepends the decoder prompt and caches it; later calls feed only new tokens.
        Returns (logits (B, t_new, V), past_key_values)."""
        hidden, past = self.decoder_hidden(decoder_input_ids, state, age, sex, past_key_values)
        return self.lm_head(hidden), past

    @staticmethod
    def select(past, state: EncoderState, keep_idx: torch.Tensor):
        """Keep only rows `keep_idx` (e.g. drop finished patients): returns (past, state); past in place."""
        if past is not None:
            past.batch_select_indices(keep_idx)
        return past, EncoderState(state.hidden[keep_idx], state.mask[keep_idx])

    @staticmethod
    def join(past, state: EncoderState, other_past, other_state: EncoderState):
        """Rows of two generation caches at the same position as one batch (self-attention caches from
        cache_capacity, so PreallocatedLayers): returns (past, state), `past` extended in place."""
        for mine, theirs in zip(past.self_attention_cache.layers, other_past.self_attention_cache.layers):
            mine.append_rows(theirs)
        for mine, theirs in zip(past.cross_attention_cache.layers, other_past.cross_attention_cache.layers):
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])
        return past, EncoderState(torch.cat([state.hidden, other_state.hidden]), torch.cat([state.mask, other_state.mask]))

    def _lm_loss(self, flat_logits, flat_labels, smoothing: float) -> torch.Tensor:
        """Mean token NLL over the labels (label-smoothed in training). In training, a time token's NLL splits
        into its kind (-log P(some gap) or -log P(some stay): the decision to open or close a visit) plus its
        bin within the kind (logsumexp over the kind's logits - the bin's logit); the bin part counts
        loss_weights.time. The sum is divided by all labels, as before, so the trainer's per-token scaling holds."""
        loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100, label_smoothing=smoothing)
        c, w = self.config, self.loss_weights.time
        if not (self.training and (c.n_gaps or c.n_stays) and w != 1.0):
            return loss
        n_labels = (flat_labels != -100).sum().clamp_min(1)
        bin_sum = flat_logits.new_zeros(())
        for start, n in ((c.time_offset, c.n_gaps), (c.time_offset + c.n_gaps, c.n_stays)):
            rows = torch.nonzero((flat_labels >= start) & (flat_labels < start + n)).squeeze(-1)  # (n_rows,)
            if rows.numel():
                kind = flat_logits[rows, start:start + n]  # (n_rows, n)
                bin_nll = torch.logsumexp(kind, -1) - kind.gather(1, (flat_labels[rows] - start)[:, None]).squeeze(1)
                bin_sum = bin_sum + bin_nll.sum()
        # the smoothed NLL of a label holds (1 - smoothing) of its plain NLL, so of its bin part
        return loss - (1.0 - w) * (1.0 - smoothing) * bin_sum / n_labels

    def forward(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, age, sex, labels=None,
                *, cooc: CoocTargets | None = None) -> ModelOutput:
        state = self.encode(input_ids, attention_mask, age, sex)
        embeds, mask = self._with_prompt(decoder_input_ids, decoder_attention_mask, self.decoder_prompt(age, sex))
        hidden = self.bart.decoder(
            inputs_embeds=embeds, attention_mask=mask, encoder_hidden_states=state.hidden,
            encoder_attention_mask=state.mask, use_cache=False,
        ).last_hidden_state[:, self.n_prompts:]  # (B, T, D)
        logits = self.lm_head(hidden)  # (B, T, V)
        if labels is None:
            return ModelOutput(loss=None, logits=logits)

        V = logits.shape[-1]
        flat_logits = logits.float().view(-1, V)  # (B*T, V)
        smoothing = self.loss_weights.label_smoothing if self.training else 0.0
        lm_loss = self._lm_loss(flat_logits, labels.view(-1), smoothing)
        valid = labels != -100  # (B, T)
        h = hidden[valid].float()  # (n_valid, D)
        B, T = labels.shape
        age_target = age.float().view(B, 1).expand(B, T)[valid]
        sex_target = sex.long().view(B, 1).expand(B, T)[valid]
        age_loss = F.mse_loss(self.age_head(h).squeeze(-1), age_target)
        sex_loss = F.cross_entropy(self.sex_head(h), sex_target)
        cooc_loss = cooccurrence_penalty(flat_logits, cooc, self.config.code_offset) \
            if cooc is not None else flat_logits.new_zeros(())
        w = self.loss_weights
        loss = lm_loss + w.age * age_loss + w.sex * sex_loss + w.cooc * cooc_loss
        return ModelOutput(loss, logits, lm_loss.detach(), age_loss.detach(), sex_loss.detach(), cooc_loss.detach())
