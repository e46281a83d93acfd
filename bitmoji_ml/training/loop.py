"""The training loop. `fit` reads top to bottom: for each epoch, train one epoch, evaluate,
decide the best, checkpoint, report. Everything MLflow is behind the `Tracker` it is given.

The same loop runs in one process or in each torchrun rank (`distributed`): every rank trains
on its shard of the epoch; rank 0 alone validates, checkpoints and reports, and every rank
records what it decided."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from bitmoji_ml.augment import augment_batch
from bitmoji_ml.checkpoints import TRAIN_STATE, save_checkpoint
from bitmoji_ml.recipe import Recipe
from bitmoji_ml.training import distributed, sharding, termination
from bitmoji_ml.training.data import TrainData
from bitmoji_ml.training.evaluate import evaluate
from bitmoji_ml.training.state import TrainState

logger = logging.getLogger(__name__)


class Tracker(Protocol):
    """What the loop reports to (an MLflow TrainingRun in practice)."""

    def log_epoch(
        self, *, epoch: int, metrics: dict[str, float], best_checkpoint: Path | None, model_name: str
    ) -> str: ...
    def log_checkpoint(self, path: Path) -> str: ...
    def log_plots(
        self,
        history: list[dict[str, float]],
        *,
        best_epoch: int,
        confusion: np.ndarray | None,
        class_names: tuple[str, ...],
    ) -> None: ...


@dataclasses.dataclass
class TrainResult:
    """What a finished (or early-stopped) training returns."""

    history: list[dict[str, float]]
    best: dict[str, float]
    best_checkpoint: str
    train_seconds: float


@dataclasses.dataclass
class EpochTotals:
    """Sums over one epoch's training batches."""

    seen: int = 0
    objective: float = 0.0  # the loss that is minimised (label-smoothed)
    loss: float = 0.0  # plain cross-entropy, comparable with val_loss
    correct: int = 0
    lr: float = 0.0  # the last learning rate used

    def summed_over_ranks(self, device: torch.device) -> EpochTotals:
        """The totals of the whole epoch, over every rank's shard (this rank's in one process)."""
        values = [self.seen, self.objective, self.loss, self.correct]
        seen, objective, loss, correct = distributed.sum_over_ranks(values, device)
        return EpochTotals(int(seen), objective, loss, int(correct), self.lr)

    def metrics(self) -> dict[str, float]:
        return {
            "train_loss": self.loss / self.seen,
            "train_objective": self.objective / self.seen,
            "train_acc": self.correct / self.seen,
            "lr": self.lr,
        }


def is_better(candidate: dict[str, float], best: dict[str, float] | None) -> bool:
    """Higher val_acc wins; on a tie, lower val_loss."""
    if best is None:
        return True
    return (candidate["val_acc"], -candidate["val_loss"]) > (best["val_acc"], -best["val_loss"])


@dataclasses.dataclass
class EpochOutcome:
    """What rank 0 measured and decided after an epoch; every rank records it."""

    metrics: dict[str, float]
    improved: bool  # this epoch's weights are the run's model (best val_acc, or the last epoch)
    confusion: np.ndarray | None  # its validation confusion matrix, when improved and validated


def train_step(
    state: TrainState,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: Recipe,
    loss_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step at the schedule's learning rate; returns (logits, objective).
    `labels` are class indices, or class probabilities per image (distillation targets: the
    cross-entropy takes either). `loss_weight` scales the gradient of a rank's share of a
    global batch (`ShardBatch`)."""
    lr = config.lr * state.schedule.factor(state.step)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=images.device.type == "cuda"):
        logits = state.trained(images)
    objective = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
    state.optimizer.zero_grad()
    (objective * loss_weight).backward()
    state.optimizer.step()
    distributed.average_batchnorm_statistics(state.model)  # equal buffers before the EMA reads them
    if state.ema is not None:
        state.ema.update_parameters(state.model)
    state.step += 1
    return logits.detach().float(), objective.detach()


def train_one_epoch(
    state: TrainState,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: Recipe,
    epoch: int,
    targets: torch.Tensor | None = None,
) -> EpochTotals:
    """One pass over this rank's shard of the training images (all of them in one process) in
    the epoch's random order, with a progress bar; returns the totals over every rank. The loss
    trains towards `targets` (class probabilities per image) when given, else the labels."""
    targets = labels if targets is None else targets
    state.trained.train()
    generator = sharding.seed_epoch(config.seed, epoch, distributed.rank())
    batches = sharding.shard_batches(
        len(labels),
        seed=config.seed,
        epoch=epoch,
        batch_size=config.batch_size,
        rank=distributed.rank(),
        world_size=distributed.world_size(),
    )
    totals = EpochTotals()
    title, shard_size = f"epoch {epoch}/{config.epochs}", sum(len(batch.index) for batch in batches)
    with distributed.progress_on_main(title, total=shard_size) as advance:
        for shard_batch in batches:
            index = shard_batch.index
            batch = augment_batch(
                images[index], generator, config.flip, config.shift, config.scale, config.jitter
            ).to(state.device, non_blocking=True)
            batch_labels = labels[index].to(state.device, non_blocking=True)
            batch_targets = (
                batch_labels if targets is labels else targets[index].to(state.device, non_blocking=True)
            )
            logits, objective = train_step(state, batch, batch_targets, config, shard_batch.loss_weight)
            totals.seen += len(index)
            totals.objective += objective.item() * len(index)
            totals.loss += F.cross_entropy(logits, batch_labels).item() * len(index)
            totals.correct += (logits.argmax(1) == batch_labels).sum().item()
            totals.lr = state.optimizer.param_groups[0]["lr"]
            advance(
                len(index), loss=f"{totals.loss / totals.seen:.4f}", acc=f"{totals.correct / totals.seen:.2%}"
            )
    return totals.summed_over_ranks(state.device)


def fit(
    *,
    config: Recipe,
    data: TrainData,
    state: TrainState,
    tracker: Tracker,
    workdir: Path,
    header: dict[str, Any],
    select_best: bool = True,
) -> TrainResult:
    """Train from `state` to `config.epochs`, reporting each epoch and checkpoint to `tracker`.
    Checkpoints (`header` + the epoch's metrics) are written in `workdir` first.

    `select_best`: best.pt is the epoch with the best val_acc; otherwise it is the last epoch
    (no selection: `cv` folds, and `--all-labelled`, whose `data` has no validation images)."""
    images, labels = torch.from_numpy(data.train_images), torch.from_numpy(data.train_labels)
    targets = None if data.train_targets is None else torch.from_numpy(data.train_targets)
    for epoch in range(state.epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        totals = train_one_epoch(state, images, labels, config, epoch, targets)
        seconds = time.perf_counter() - started
        last = epoch == config.epochs
        measure = functools.partial(
            validate, state, data, totals, seconds, select_best=select_best, last=last
        )
        outcome = distributed.share_from_main(measure)
        record_epoch(state, epoch, outcome.metrics, outcome.improved, outcome.confusion)
        if distributed.is_main():
            with termination.termination_deferred():  # a SIGTERM waits for whole checkpoints
                fields = {**header, "metrics": state.history[-1], "epoch": epoch}
                save_and_log(state, tracker, workdir, fields, outcome.improved)
            log_epoch_line(epoch, config.epochs, outcome.metrics, outcome.improved)
        if select_best and config.patience and epoch - int(state.best["epoch"]) >= config.patience:
            logger.info("early stop: no better val_acc for %d epochs", config.patience)
            break
    if state.best is None:
        raise RuntimeError("training ran no epoch")
    if distributed.is_main():
        log_plots(tracker, state, data.classes.names)
    return TrainResult(state.history, state.best, state.best_checkpoint, state.train_seconds)


def validate(
    state: TrainState, data: TrainData, totals: EpochTotals, seconds: float, *, select_best: bool, last: bool
) -> EpochOutcome:
    """The epoch's metrics (train totals, validation of the evaluated weights when there are
    validation images, speed) and whether it becomes the run's model: the best val_acc so far
    with `select_best`, else the last epoch."""
    result = None
    if data.val_images is not None:
        result = evaluate(state.evaluated, data.val_images, data.val_labels, state.device)
    validated = result.metrics("val", data.classes) if result else {}
    metrics = {**totals.metrics(), **validated, "epoch_seconds": seconds}
    metrics["images_per_second"] = totals.seen / seconds
    improved = is_better(metrics, state.best) if select_best else last
    return EpochOutcome(metrics, improved, result.confusion if result is not None and improved else None)


def record_epoch(
    state: TrainState, epoch: int, metrics: dict[str, float], improved: bool, confusion: np.ndarray | None
) -> None:
    """Add the epoch to the state's history; when `improved` it is the new best."""
    state.history.append({"epoch": epoch, **metrics})
    state.epoch, state.train_seconds = epoch, state.train_seconds + metrics["epoch_seconds"]
    if improved:
        state.best = state.history[-1]
        state.best_confusion = state.best_confusion if confusion is None else confusion


def save_and_log(
    state: TrainState, tracker: Tracker, workdir: Path, fields: dict[str, Any], improved: bool
) -> None:
    """best.pt (when improved) and last.pt (with the training state), written and logged."""
    best_path = workdir / "best.pt" if improved else None
    if best_path is not None:
        save_checkpoint(best_path, state.evaluated, **fields)
    location = tracker.log_epoch(
        epoch=fields["epoch"],
        metrics={key: value for key, value in fields["metrics"].items() if key != "epoch"},
        best_checkpoint=best_path,
        model_name=fields["model"],
    )
    if improved:
        state.best_checkpoint = location
    save_checkpoint(workdir / "last.pt", state.evaluated, **fields, **{TRAIN_STATE: state.state_dict()})
    tracker.log_checkpoint(workdir / "last.pt")


def log_epoch_line(epoch: int, epochs: int, metrics: dict[str, float], improved: bool) -> None:
    val = (
        f"val loss {metrics['val_loss']:.4f} acc {100 * metrics['val_acc']:.2f}%"
        if "val_acc" in metrics
        else "no validation"
    )
    logger.info(
        "epoch %3d/%d  train loss %.4f acc %.2f%%  %s  %.1fs %s img/s%s",
        epoch,
        epochs,
        metrics["train_loss"],
        100 * metrics["train_acc"],
        val,
        metrics["epoch_seconds"],
        f"{metrics['images_per_second']:,.0f}",
        "  *best" if improved else "",
    )


def log_plots(tracker: Tracker, state: TrainState, class_names: tuple[str, ...]) -> None:
    """Learning curves and the best epoch's validation confusion matrix (none without
    validation), drawn and logged by the tracker (matplotlib is never imported here)."""
    assert state.best is not None
    confusion = np.asarray(state.best_confusion) if "val_acc" in state.best else None
    tracker.log_plots(
        state.history, best_epoch=int(state.best["epoch"]), confusion=confusion, class_names=class_names
    )
