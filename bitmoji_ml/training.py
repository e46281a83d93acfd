"""The training loop: decode the lists once, augment on tensors, train, validate, checkpoint.

Reads top to bottom: `load_data` -> `fit` (one loop over epochs and batches). Everything MLflow
is behind the `tracker` argument (see tracking.runs.TrainingRun).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from bitmoji_ml.augment import augment_batch
from bitmoji_ml.checkpoints import save_checkpoint
from bitmoji_ml.config import TrainConfig
from bitmoji_ml.data.cache import load_list
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.data.lists import LIST_FILES, read_manifest
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import create_model, model_spec
from bitmoji_ml.models.normalize import Classifier
from bitmoji_ml.paths import CACHE_DIR

EVAL_BATCH = 256


class Tracker(Protocol):
    """What the loop reports to (MLflow in practice; see tracking.runs.TrainingRun)."""

    def log_epoch(self, epoch: int, metrics: dict[str, float], best_checkpoint: Path | None) -> str: ...
    def log_checkpoint(self, path: Path) -> str: ...
    def log_figures(self, history: list[dict[str, float]], confusion: np.ndarray) -> None: ...


@dataclasses.dataclass
class TrainData:
    """Decoded images (uint8 NHWC) and labels for the train and validation lists."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    val_paths: list[Path]
    manifest: dict[str, Any]


@dataclasses.dataclass
class TrainResult:
    """What a finished (or early-stopped) training returns."""

    history: list[dict[str, float]]
    best: dict[str, float]
    best_checkpoint: str
    train_seconds: float


def preprocess_for(config: TrainConfig) -> Preprocess:
    """The model's preprocessing, with `image_size` overriding its input size when set."""
    spec = model_spec(config.model).preprocess
    if config.image_size:
        ratio = spec.resize / spec.size
        spec = dataclasses.replace(spec, size=config.image_size, resize=round(config.image_size * ratio))
    return spec


def load_data(lists_dir: Path, preprocess: Preprocess, disk_cache: bool = False) -> TrainData:
    """Decode the train and val lists once into memory (and into data/cache/ if asked)."""
    manifest = read_manifest(lists_dir)
    cache = CACHE_DIR if disk_cache else None
    train_images, train_labels, _ = load_list(Path(lists_dir) / LIST_FILES["train"], preprocess, cache)
    val = load_list(Path(lists_dir) / LIST_FILES["val"], preprocess, cache)
    return TrainData(train_images, train_labels, *val, manifest=manifest)


def select_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device that is absent is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise BitmojiError(f"--device {name} requested but no {name.upper()} device is available")
    return torch.device(name)


@torch.no_grad()
def predict_probabilities(model: Classifier, images: np.ndarray, device: torch.device) -> np.ndarray:
    """P(class) for uint8 NHWC images, batched, in eval mode; shape (N, 2)."""
    model.eval()
    outputs = []
    for start in range(0, len(images), EVAL_BATCH):
        batch = torch.from_numpy(images[start : start + EVAL_BATCH]).to(device)
        outputs.append(torch.softmax(model(batch).float(), dim=1).cpu())
    return torch.cat(outputs).numpy()


def make_optimizer(model: Classifier, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on BatchNorm and bias parameters."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(step: int, total_steps: int, schedule: str, warmup: float = 0.2) -> float:
    """Multiplier of the peak learning rate at `step`: onecycle warms up linearly from 4 % then
    follows a cosine down to zero; cosine only decays; constant stays at 1."""
    if schedule == "constant":
        return 1.0
    warm = max(1, round(total_steps * warmup)) if schedule == "onecycle" else 0
    if step < warm:
        return 0.04 + 0.96 * step / warm
    progress = min(1.0, (step - warm) / max(1, total_steps - warm))
    return 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """A per-batch learning-rate schedule (see `lr_factor`)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, config.schedule)
    )


class ProgressLine:
    """One self-overwriting line per epoch on a terminal; silent otherwise."""

    def __init__(self, epoch: int, epochs: int, total: int) -> None:
        self.prefix, self.total, self.start = f"epoch {epoch}/{epochs}", total, time.perf_counter()
        self.enabled = sys.stderr.isatty()

    def update(self, done: int, loss: float, accuracy: float) -> None:
        if not self.enabled:
            return
        width = 24
        filled = width * done // self.total
        speed = done / max(time.perf_counter() - self.start, 1e-9)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(
            f"\r{self.prefix} [{bar}] {done}/{self.total} loss {loss:.4f} acc {accuracy:.2%} {speed:,.0f} img/s"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")


def ema_update(decay: float):
    """EMA step whose decay ramps up as (1 + n) / (10 + n) to `decay`, so the average is not
    dominated by the random initial weights in short runs."""

    def update(average: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        rate = min(decay, (1 + float(updates)) / (10 + float(updates)))
        return average * rate + current * (1 - rate)

    return update


def is_better(candidate: dict[str, float], best: dict[str, float] | None) -> bool:
    """Higher val_acc wins; on a tie, lower val_loss."""
    if best is None:
        return True
    return (candidate["val_acc"], -candidate["val_loss"]) > (best["val_acc"], -best["val_loss"])


def train_one_epoch(
    model: Classifier,
    ema: torch.optim.swa_utils.AveragedModel | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    order: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
    progress: ProgressLine,
) -> tuple[int, float, int]:
    """One pass over the training images in `order`; returns (images seen, loss sum, correct)."""
    model.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    seen = correct = 0
    loss_sum = 0.0
    for start in range(0, len(order), config.batch_size):
        index = order[start : start + config.batch_size]
        if len(index) < 2 and seen:  # BatchNorm cannot train on a batch of one
            continue
        images = augment_batch(
            train_images[index], generator, config.flip, config.shift, config.scale, config.jitter
        ).to(device, non_blocking=True)
        labels = train_labels[index].to(device, non_blocking=True)
        with autocast:
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        scheduler.step()
        seen += len(index)
        loss_sum += loss.item() * len(index)
        correct += (logits.argmax(1) == labels).sum().item()
        progress.update(seen, loss_sum / seen, correct / seen)
    return seen, loss_sum, correct


def fit(
    config: TrainConfig,
    data: TrainData,
    tracker: Tracker,
    workdir: Path,
    resume: dict[str, Any] | None = None,
    echo=print,
) -> TrainResult:
    """Train `config.model` on `data`, reporting each epoch and checkpoint to `tracker`;
    checkpoint files are written in `workdir` before the tracker stores them."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    device = select_device(config.device)
    preprocess = preprocess_for(config)
    # Channels-last weights: ~1.4x faster convolutions on CPU (oneDNN) as well as on CUDA.
    model = create_model(config.model, preprocess).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    n_train = len(data.train_labels)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    scheduler = make_scheduler(optimizer, config, config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    # An exponential moving average of the weights is what gets evaluated and checkpointed:
    # it is steadier from epoch to epoch than the raw weights.
    ema = (
        torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_update(config.ema), use_buffers=True)
        if config.ema
        else None
    )
    evaluated = ema.module if ema is not None else model
    history: list[dict[str, float]] = []
    best: dict[str, float] | None = None
    best_checkpoint, train_seconds, start_epoch = "", 0.0, 1
    if resume is not None:
        model.load_state_dict(resume["train_state_dict"])
        if ema is not None:
            ema.module.load_state_dict(resume["state_dict"])
            ema.n_averaged.fill_(resume["ema_updates"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        history, best = list(resume["history"]), resume["best"]
        best_checkpoint, train_seconds = resume["best_checkpoint"], resume["train_seconds"]
        start_epoch = resume["epoch"] + 1
    train_images = torch.from_numpy(data.train_images)
    train_labels = torch.from_numpy(data.train_labels)
    best_confusion = np.zeros((2, 2), dtype=np.int64)
    if resume is not None:
        best_confusion = np.array(resume["best_confusion"], dtype=np.int64)

    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(n_train, generator=generator)
        progress = ProgressLine(epoch, config.epochs, n_train)
        seen, loss_sum, correct = train_one_epoch(
            model,
            ema,
            optimizer,
            scheduler,
            train_images,
            train_labels,
            order,
            config,
            generator,
            device,
            progress,
        )
        progress.close()
        epoch_seconds = time.perf_counter() - started
        train_seconds += epoch_seconds

        probabilities = predict_probabilities(evaluated, data.val_images, device)
        val_labels = torch.from_numpy(data.val_labels)
        val_loss = F.nll_loss(torch.from_numpy(probabilities).clamp_min(1e-12).log(), val_labels).item()
        predicted = probabilities.argmax(1)
        metrics = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": float((predicted == data.val_labels).mean()),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": epoch_seconds,
            "images_per_second": seen / epoch_seconds,
        }
        history.append(metrics)
        common = {
            "model": config.model,
            "config": dataclasses.asdict(config),
            "preprocess": preprocess.to_dict(),
            "metrics": metrics,
            "epoch": epoch,
            "data_digest": data.manifest.get("digest", ""),
            "mlflow_run_id": getattr(tracker, "run_id", ""),
        }
        improved = is_better(metrics, best)
        if improved:
            best = metrics
            best_confusion = np.zeros((2, 2), dtype=np.int64)
            np.add.at(best_confusion, (data.val_labels, predicted), 1)
            save_checkpoint(workdir / "best.pt", evaluated, **common)
            best_checkpoint = tracker.log_epoch(epoch, metrics, workdir / "best.pt")
        else:
            tracker.log_epoch(epoch, metrics, None)
        save_checkpoint(
            workdir / "last.pt",
            evaluated,
            **common,
            train_state_dict=model.state_dict(),
            ema_updates=int(ema.n_averaged) if ema is not None else 0,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            generator=generator.get_state(),
            torch_rng=torch.get_rng_state(),
            history=history,
            best=best,
            best_checkpoint=best_checkpoint,
            best_confusion=best_confusion.tolist(),
            train_seconds=train_seconds,
        )
        tracker.log_checkpoint(workdir / "last.pt")
        echo(
            f"epoch {epoch:>3}/{config.epochs}  train loss {metrics['train_loss']:.4f} "
            f"acc {metrics['train_acc']:.2%}  val loss {val_loss:.4f} acc {metrics['val_acc']:.2%}  "
            f"{epoch_seconds:.1f}s {metrics['images_per_second']:,.0f} img/s"
            + ("  *best" if improved else "")
        )
        if config.patience and epoch - int(best["epoch"]) >= config.patience:
            echo(f"early stop: no better val_acc for {config.patience} epochs")
            break

    assert best is not None, "training ran no epoch"
    tracker.log_figures(history, best_confusion)
    return TrainResult(history, best, best_checkpoint, train_seconds)


class _LoopTracker:
    """fit's tracker calls on a tracking.runs.TrainingRun (a bridge until fit calls the run
    directly)."""

    def __init__(self, run: Any, model_name: str) -> None:
        self.run, self.model_name, self.run_id = run, model_name, run.run_id

    def log_epoch(self, epoch: int, metrics: dict[str, float], best_checkpoint: Path | None) -> str:
        return self.run.log_epoch(
            epoch=epoch, metrics=metrics, best_checkpoint=best_checkpoint, model_name=self.model_name
        )

    def log_checkpoint(self, path: Path) -> str:
        return self.run.log_checkpoint(path)

    def log_figures(self, history: list[dict[str, float]], confusion: np.ndarray) -> None:
        from bitmoji_ml import plots
        from bitmoji_ml.tracking.names import PLOTS_DIR

        with tempfile.TemporaryDirectory() as folder:
            plots.learning_curves(history, Path(folder) / "learning_curves.png")
            plots.confusion_matrix_plot(confusion, Path(folder) / "confusion_matrix.png")
            self.run.log_artifacts(Path(folder), PLOTS_DIR)


def train_job(
    preset: str,
    config_file: Path | None,
    overrides: dict[str, Any],
    lists_dir: Path,
    experiment: str,
    run_name: str | None = None,
    resume_run_id: str | None = None,
    echo=print,
    *,
    store: Any = None,
) -> dict[str, Any]:
    """`bitmoji train`: check the store, build the config, decode the data, train in an MLflow
    run. Everything that can fail on user input fails before the run is created."""
    from bitmoji_ml.checkpoints import read_checkpoint
    from bitmoji_ml.config import build_config, config_from_dict
    from bitmoji_ml.models import count_parameters
    from bitmoji_ml.tracking.names import LAST_CHECKPOINT
    from bitmoji_ml.tracking.runs import TrainingRun, default_run_name, download_run_checkpoint
    from bitmoji_ml.tracking.store import Store

    store = store or Store.open()
    experiment_id = store.experiment_id(experiment)
    resume = None
    if resume_run_id:
        with tempfile.TemporaryDirectory() as folder:
            resume = read_checkpoint(
                download_run_checkpoint(
                    store, run_id=resume_run_id, name=LAST_CHECKPOINT, folder=Path(folder)
                )
            )
        config = config_from_dict(
            {
                **resume["config"],
                **({"epochs": overrides["epochs"]} if overrides.get("epochs") else {}),
            }
        )
    else:
        config = build_config(preset, config_file, overrides)
    device = select_device(config.device)
    started = time.perf_counter()
    data = load_data(lists_dir, preprocess_for(config), config.disk_cache)
    echo(
        f"decoded {len(data.train_labels)} train + {len(data.val_labels)} val images in "
        f"{time.perf_counter() - started:.1f}s; model {config.model} on {device.type}"
    )
    run_name = run_name or default_run_name(config, image_size=preprocess_for(config).size)
    with TrainingRun(
        store, experiment_id=experiment_id, run_name=run_name, resume_run_id=resume_run_id
    ) as run:
        echo(f"MLflow run {run.run_id} ({store.uri}, experiment {experiment})")
        parameters = count_parameters(create_model(config.model, preprocess_for(config)))
        tags = {
            "model": config.model,
            "torch_version": torch.__version__,
            "device": device.type,
            "parameters": str(parameters),
        }
        run.log_start(params=config.to_params(), tags=tags, lists_dir=lists_dir, manifest=data.manifest)
        tracker = _LoopTracker(run, config.model)
        try:
            with tempfile.TemporaryDirectory(prefix="bitmoji-train-") as workdir:
                result = fit(config, data, tracker, Path(workdir), resume=resume, echo=echo)
        except KeyboardInterrupt:
            echo(f"interrupted: run {run.run_id} ends as KILLED; continue it with --resume {run.run_id}")
            raise
        best = result.best
        run.log_summary(
            {
                "best_val_acc": best["val_acc"],
                "best_val_loss": best["val_loss"],
                "best_epoch": best["epoch"],
                "train_seconds": result.train_seconds,
                "epochs_run": len(result.history),
            }
        )
    return {
        "run_id": run.run_id,
        "best_val_acc": result.best["val_acc"],
        "best_epoch": int(result.best["epoch"]),
        "best_checkpoint": result.best_checkpoint,
        "train_seconds": result.train_seconds,
        "history": result.history,
    }
