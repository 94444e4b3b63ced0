"""What a training run changes as it goes: the model, optimizer and schedule, the counters, the log and the
best epoch so far. Its resume state (written to `<out>.resume/` by model/nn/checkpoint.py) holds all of it
with the torch/numpy/python RNG states, as tensors and plain values, so torch.load(weights_only=True) can
read it back."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from promptehr.model.nn.config import TrainConfig
from promptehr.model.nn.promptbart import PromptBart
from promptehr.model.tokens.vocab import Vocabulary


def rng_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def zero_sums() -> dict:
    return {"loss": 0.0, "lm": 0.0, "age": 0.0, "sex": 0.0, "cooc": 0.0, "n": 0}


def no_best() -> dict:
    return {"val_loss": None, "epoch": None, "bad_epochs": 0}


@dataclass
class TrainingState:
    model: PromptBart
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    epoch: int = 0  # 0-based index of the epoch under way (= epochs finished)
    step_in_epoch: int = 0  # batches of that epoch done
    step: int = 0  # optimizer steps done
    log: list[dict] = field(default_factory=list)  # the training_log.jsonl lines so far
    best: dict = field(default_factory=no_best)  # best val_loss, its epoch (1-based), epochs since (patience)
    run_sums: dict = field(default_factory=zero_sums)  # training losses summed over this epoch's steps, and n
    # this process only, not resumed: the epoch's clock and throughput
    t_epoch: float = field(default_factory=time.time)
    tokens_seen: int = 0
    t_rate: float = field(default_factory=time.time)

    @classmethod
    def resumed(cls, model: PromptBart, opt, sched, saved: dict) -> TrainingState:
        """The state `saved` (a resume state) describes; also sets the RNGs where the interrupted run left them."""
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        state = cls(model, opt, sched, saved["epoch"], saved["step_in_epoch"], saved["step"], list(saved["log"]),
                    dict(saved["best"]), dict(saved["run_sums"]))
        set_rng_state(saved["rng"])
        return state

    def resume_state(self, vocab: Vocabulary, config: TrainConfig) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "step": self.step, "log": self.log,
                "best": self.best, "run_sums": self.run_sums, "rng": rng_state(), "vocab": vocab.to_dict(),
                "train_config": config.to_dict()}

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.run_sums = zero_sums()
        self.t_epoch = time.time()
