"""Model and training configuration: two dataclasses, JSON round trip, and the presets tiny/small/base."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ModelConfig:
    vocab_size: int = 0  # set from the Vocabulary when training starts
    code_offset: int = 0  # first code token id (codes are the last ids); set from the Vocabulary
    # Time tokens: n_gaps gap ids from time_offset, then n_stays stay ids (0 and 0: a model without time).
    # Set from the Vocabulary; training weighs the choice of their bin by TrainConfig.time_weight.
    time_offset: int = 0
    n_gaps: int = 0
    n_stays: int = 0
    d_model: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 3
    attention_heads: int = 4
    ffn_dim: int = 1024
    max_length: int = 512  # token ids per sequence (encoder or decoder), prompts not counted
    dropout: float = 0.1
    attention_dropout: float = 0.0
    prompt_length: int = 1  # vectors per demographic feature; the reference finds 1 enough
    prompt_hidden: int = 128  # reparameterisation bottleneck of the prompt networks
    mode: str = "hierarchical"  # tokenizer mode the model was trained with
    # Standardisation of age, from the training split: age_std = (age - age_mean) / age_sd.
    age_mean: float = 0.0
    age_sd: float = 1.0
    init_from: str | None = None  # local Hugging Face BART directory the weights started from, if any

    @property
    def n_prompts(self) -> int:
        # age and sex each contribute prompt_length vectors, concatenated (as in the reference)
        return 2 * self.prompt_length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _default_objectives() -> dict[str, float]:
    # Share of training examples per objective (normalised). "empty": no encoder input, so generating
    # from demographics alone is in-distribution; "next_visit": encoder = earlier visits and a
    # closing <mask>, target = the whole record.
    return {"mask": 0.35, "delete": 0.1, "replace": 0.1, "next_visit": 0.25, "empty": 0.2}


@dataclass
class TrainConfig:
    preset: str = "small"
    mode: str = "hierarchical"  # tokenizer mode: hierarchical (category, code pairs) or flat
    init_from: str | None = None  # local Hugging Face BART directory to initialise the weights from
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs when reached)
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100  # linear warmup, then linear decay to 0 at the last step
    grad_clip: float = 1.0
    seed: int = 0
    patience: int = 3  # epochs without validation improvement before stopping
    save_every: int = 200  # optimizer steps between resume snapshots (and always at epoch end)
    min_count: int = 1  # codes seen in fewer training visits map to their category token
    # Learn when visits happen (gap and stay tokens, model/tokens/time_bins.py) where every training patient
    # has dates; False trains on codes alone, as before time (the same data without its timeline).
    time: bool = True
    # Weight of a time token's bin choice in the loss (the decision "a gap/stay comes here", which opens a
    # visit or closes one, always weighs 1). Measured on DE-SynPUF 1-6 (small, 5 epochs): 0.5 gave pair R^2
    # 0.852 for 0.855/0.856 at 1 (two seeds), masked perplexity 140.6 for 142.0: no gain, so 1. Weighing
    # whole time tokens by 0.5 made stays too unlikely where a visit ends: 9.0 codes per visit for 8.09.
    time_weight: float = 1.0
    objectives: dict[str, float] = field(default_factory=_default_objectives)
    mask_ratio: float = 0.3  # share of content tokens masked by span infilling (BART)
    poisson_lambda: float = 3.0  # span lengths
    delete_prob: float = 0.15
    replace_prob: float = 0.15
    age_weight: float = 0.001
    sex_weight: float = 0.001
    cooc_weight: float = 0.05
    cooc_threshold: int = 5  # within-visit pair count below which a pair is "rare"
    # Rare codes (seen 1-3 times) end up far less likely on held-out records than their frequency says:
    # the model learns them in their few training contexts. Smoothing 0.1 cut held-out perplexity
    # 5-7% on DE-SynPUF sample 1 (small preset, 3 epochs; masked 402 -> 378, next visit 662 -> 627).
    label_smoothing: float = 0.1
    val_seed: int = 1234  # fixed validation corruption
    max_val_patients: int | None = None  # cap on validation patients (None: all)

    def loss_weights(self) -> dict[str, float]:
        """The keyword arguments of promptbart.LossWeights: this config is their one source."""
        return {"age": self.age_weight, "sex": self.sex_weight, "cooc": self.cooc_weight,
                "label_smoothing": self.label_smoothing, "time": self.time_weight}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


PRESETS: dict[str, dict] = {
    # tests: seconds on CPU
    "tiny": {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "attention_heads": 4, "ffn_dim": 128,
             "max_length": 256, "dropout": 0.1, "prompt_hidden": 32},
    # CPU demo: minutes
    "small": {"d_model": 256, "encoder_layers": 3, "decoder_layers": 3, "attention_heads": 4, "ffn_dim": 1024,
              "max_length": 512},
    # bart-base sizes, for a GPU
    "base": {"d_model": 768, "encoder_layers": 6, "decoder_layers": 6, "attention_heads": 12, "ffn_dim": 3072,
             "max_length": 1024},
}

# Training defaults that differ per preset (the CLI and API may override any of them).
TRAIN_PRESETS: dict[str, dict] = {
    "tiny": {"batch_size": 16, "lr": 2e-3, "warmup_steps": 10, "epochs": 3},
    "small": {"batch_size": 32, "lr": 1e-3, "warmup_steps": 200, "epochs": 10},
    "base": {"batch_size": 32, "lr": 1e-4, "warmup_steps": 1000, "epochs": 20},
}


def model_config(preset: str, **overrides) -> ModelConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[preset], **overrides})


def train_config(preset: str, **overrides) -> TrainConfig:
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(TRAIN_PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return TrainConfig(preset=preset, **{**TRAIN_PRESETS[preset], **overrides})


def save_json(path, model: ModelConfig, train: TrainConfig | None = None, extra: dict | None = None) -> None:
    """config.json: {"model": ..., "train": ..., plus extras (e.g. best epoch)}."""
    d = {"model": model.to_dict(), "train": train.to_dict() if train else None, **(extra or {})}
    Path(path).write_text(json.dumps(d, indent=2))


def load_json(path) -> tuple[ModelConfig, TrainConfig | None, dict]:
    d = json.loads(Path(path).read_text())
    train = TrainConfig.from_dict(d["train"]) if d.get("train") else None
    return ModelConfig.from_dict(d["model"]), train, d
