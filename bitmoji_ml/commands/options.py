"""What every command shares: the common options, declared once, and `friendly`, which turns
a BitmojiError into one line on stderr and exit code 1."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml.config import TrainConfig
from bitmoji_ml.errors import BitmojiError, ReportedElsewhere

DataDir = Annotated[
    Path | None,
    typer.Option(help="Kaggle dataset folder (default: $BITMOJI_DATA, ../shared/bitmoji, data/bitmoji)"),
]
ListsDir = Annotated[Path, typer.Option("--lists", help="Folder with the lists from `prepare`")]
Experiment = Annotated[str, typer.Option(help="MLflow experiment name")]


def friendly(command: Callable) -> Callable:
    """Turn a BitmojiError into a one-line message on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BitmojiError as error:
            if not isinstance(error, ReportedElsewhere):
                typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def setting(field: str, text: str, *names: str):
    """A recipe flag whose help shows the default from TrainConfig (presets may change it)."""
    return typer.Option(*names, help=f"{text} (default: {getattr(TrainConfig, field)})", show_default=False)


# The recipe flags, shared by train, cv and tune (each maps to the TrainConfig field of its name).
Preset = Annotated[str, typer.Option(help="default, seed-cnn (the baseline) or resnet18")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML file of TrainConfig values")]
Model = Annotated[str | None, setting("model", "hybrid, separable, compact, seed-cnn or resnet18")]
Epochs = Annotated[int | None, setting("epochs", "Training epochs")]
BatchSize = Annotated[int | None, setting("batch_size", "Images per step")]
Lr = Annotated[float | None, setting("lr", "Peak learning rate")]
Optimizer = Annotated[str | None, setting("optimizer", "adamw or sgd")]
Schedule = Annotated[str | None, setting("schedule", "onecycle, cosine or constant")]
WeightDecay = Annotated[float | None, setting("weight_decay", "Weight decay")]
LabelSmoothing = Annotated[float | None, setting("label_smoothing", "Label smoothing")]
ImageSize = Annotated[int | None, setting("image_size", "Input side in pixels, 0 = the model's")]
Width = Annotated[
    float | None, setting("width", "Model channel-width multiplier (hybrid, separable, compact)")
]
Patience = Annotated[
    int | None, setting("patience", "Early-stop after N epochs without a better val_acc, 0 = off")
]
Seed = Annotated[int | None, setting("seed", "Random seed")]
Device = Annotated[str | None, setting("device", "auto, cpu, cuda or mps")]
Threads = Annotated[int | None, setting("threads", "CPU threads, 0 = all cores")]
Flip = Annotated[bool | None, setting("flip", "Random horizontal flips", "--flip/--no-flip")]
Shift = Annotated[float | None, setting("shift", "Max random shift, fraction of the side")]
Scale = Annotated[float | None, setting("scale", "Max random zoom, fraction")]
Jitter = Annotated[float | None, setting("jitter", "Colour jitter strength")]
DiskCache = Annotated[
    bool | None, setting("disk_cache", "Keep decoded images in data/cache/", "--disk-cache/--no-disk-cache")
]
RunName = Annotated[str | None, typer.Option(help="MLflow run name (default: model + settings)")]


def recipe_overrides(values: dict[str, object]) -> dict[str, object]:
    """The TrainConfig fields among a command's arguments (None: not given)."""
    return {
        field.name: values[field.name] for field in dataclasses.fields(TrainConfig) if field.name in values
    }
