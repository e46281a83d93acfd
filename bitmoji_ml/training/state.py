"""The training state: everything a run changes as it trains, in one object. `last.pt` holds its
`state_dict()`; `--resume` builds a fresh state and calls `load_state_dict()`.

The random generators are not part of it: each epoch seeds its own from (seed, epoch, rank)
(`sharding.seed_epoch`), so a resumed run draws what an uninterrupted one would, on any
number of processes."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.models import create_model
from bitmoji_ml.models.normalize import Classifier
from bitmoji_ml.recipe import Recipe
from bitmoji_ml.training.optimizer import Optimizer
from bitmoji_ml.training.schedule import Schedule

AveragedModel = torch.optim.swa_utils.AveragedModel


def ema_update(decay: float):
    """EMA step whose decay ramps up as (1 + n) / (10 + n) to `decay`, so the average is not
    dominated by the random initial weights in short runs. One foreach lerp per group of
    tensors of a dtype, as torch's own `get_ema_multi_avg_fn` does (half the time of a Python
    step per tensor)."""

    @torch.no_grad()
    def update(averages: list[torch.Tensor], currents: list[torch.Tensor], updates: torch.Tensor) -> None:
        rate = min(decay, (1 + float(updates)) / (10 + float(updates)))
        if averages[0].is_floating_point():
            torch._foreach_lerp_(averages, currents, 1 - rate)
        else:  # integer buffers (BatchNorm's batch count): as torch's EMA updates them
            for average, current in zip(averages, currents, strict=True):
                average.copy_(average * rate + current * (1 - rate))

    return update


def make_optimizer(model: Classifier, config: Recipe) -> Optimizer:
    """AdamW or SGD; no weight decay on BatchNorm and bias parameters."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return Optimizer(groups, config.optimizer, lr=config.lr, momentum=config.momentum)


@dataclasses.dataclass
class TrainState:
    """Model, weight average, optimizer, LR schedule and the record so far."""

    model: Classifier  # the network itself; under torchrun, `replica` wraps it
    ema: AveragedModel | None  # the weights that are evaluated and saved, when EMA is on
    optimizer: Optimizer
    schedule: Schedule
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    best: dict[str, float] | None = None
    # The best epoch's validation confusion matrix (classes x classes); empty until one is measured.
    best_confusion: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.int64))
    best_checkpoint: str = ""  # where the tracker stored the best epoch's best.pt
    train_seconds: float = 0.0
    # Under torchrun: the DistributedDataParallel wrapper training steps call (never saved:
    # checkpoints hold the unwrapped model's weights, which load anywhere).
    replica: DistributedDataParallel | None = None

    @property
    def trained(self) -> torch.nn.Module:
        """What a training step calls: the data-parallel wrapper, or the model itself."""
        return self.replica if self.replica is not None else self.model

    @property
    def evaluated(self) -> Classifier:
        """The network that is validated and checkpointed: the EMA weights when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (checkpoints load with `weights_only=True`)."""
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "best": self.best,
            "best_confusion": self.best_confusion.tolist(),
            "best_checkpoint": self.best_checkpoint,
            "train_seconds": self.train_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (saved on any device) on this state's device."""
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule = Schedule.from_state_dict(state["schedule"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.history, self.best = list(state["history"]), state["best"]
        confusion = np.array(state["best_confusion"], dtype=np.int64)
        self.best_confusion = confusion if confusion.ndim == 2 else np.zeros((0, 0), np.int64)
        self.best_checkpoint, self.train_seconds = state["best_checkpoint"], state["train_seconds"]


def new_train_state(
    config: Recipe, preprocess: Preprocess, device: torch.device, steps_per_epoch: int, num_classes: int
) -> TrainState:
    """A fresh state for `config`: the seeded model with `num_classes` outputs (the same on every
    rank), the planned schedule."""
    torch.manual_seed(config.seed)
    # Channels-last weights: ~1.4x faster convolutions on CPU (oneDNN) as well as on CUDA.
    model = create_model(config.model, preprocess, width=config.width, num_classes=num_classes).to(
        device, memory_format=torch.channels_last
    )
    optimizer = make_optimizer(model, config)
    schedule = Schedule.planned(config.schedule, config.epochs * steps_per_epoch)
    # An exponential moving average of the weights is what gets evaluated and checkpointed:
    # it is steadier from epoch to epoch than the raw weights.
    ema = AveragedModel(model, multi_avg_fn=ema_update(config.ema), use_buffers=True) if config.ema else None
    return TrainState(model, ema, optimizer, schedule)
