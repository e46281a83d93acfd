"""Training configuration: plain values in a dataclass, presets, TOML files and flag overrides."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from bitmoji_ml.errors import BitmojiError


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a training run. Every field is logged as an MLflow param."""

    model: str = "hybrid"
    image_size: int = 0  # 0: the model's default input size
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine | constant
    label_smoothing: float = 0.1
    ema: float = 0.99  # decay of the weight average that is evaluated and saved; 0 = off
    patience: int = 0  # epochs without a better val_acc before stopping; 0 = never stop early
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int = 0  # 0: all cores
    flip: bool = True
    shift: float = 0.08  # max translation, fraction of the image side
    scale: float = 0.08  # max zoom in or out, fraction
    jitter: float = 0.2  # brightness / contrast / saturation strength
    disk_cache: bool = False  # keep decoded images under data/cache/ between runs
    width: float = 1.0  # channel-width multiplier of the model (1 = its registered size)
    all_labelled: bool = False  # train on train + val, no validation: the last epoch is the model
    # With several CUDA processes: BatchNorm statistics over the whole global batch
    # (SyncBatchNorm) instead of each process's share. SyncBatchNorm does not run on CPU.
    sync_batchnorm: bool = False

    def to_params(self) -> dict[str, str]:
        """Flat, stably named MLflow params."""
        return {key: str(value) for key, value in dataclasses.asdict(self).items()}


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The published baseline: plain SGD at batch 4 for 10 epochs, no augmentation.
    "seed-cnn": {
        "model": "seed-cnn",
        "epochs": 10,
        "batch_size": 4,
        "optimizer": "sgd",
        "lr": 1e-4,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "schedule": "constant",
        "label_smoothing": 0.0,
        "ema": 0.0,
        "flip": False,
        "shift": 0.0,
        "scale": 0.0,
        "jitter": 0.0,
    },
    "resnet18": {"model": "resnet18", "epochs": 12, "lr": 2e-3, "batch_size": 64},
}
CHOICES = {
    "optimizer": ("adamw", "sgd"),
    "schedule": ("onecycle", "cosine", "constant"),
    "device": ("auto", "cpu", "cuda", "mps"),
}


def build_config(
    preset: str = "default",
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults, then the preset, then the TOML file, then command-line overrides."""
    return config_from_dict(requested_values(preset, config_file, overrides))


def requested_values(
    preset: str = "default",
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The values the preset, the TOML file and the overrides set (None overrides are unset),
    later ones winning; not yet checked (see `config_from_dict`)."""
    if preset not in PRESETS:
        raise BitmojiError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    values: dict[str, Any] = dict(PRESETS[preset])
    if config_file is not None:
        try:
            values.update(tomllib.loads(Path(config_file).read_text(encoding="utf-8")))
        except FileNotFoundError as error:
            raise BitmojiError(f"config file {config_file} not found") from error
        except tomllib.TOMLDecodeError as error:
            raise BitmojiError(f"config file {config_file} is not valid TOML: {error}") from error
        except (OSError, UnicodeDecodeError) as error:
            raise BitmojiError(f"cannot read config file {config_file}: {error}") from error
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return values


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from plain values, with unknown keys and bad types or choices refused."""
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise BitmojiError(f"unknown config key(s): {', '.join(unknown)}; known: {', '.join(fields)}")
    defaults = TrainConfig()
    typed = {key: _typed(key, value, type(getattr(defaults, key))) for key, value in values.items()}
    config = TrainConfig(**typed)
    for key, allowed in CHOICES.items():
        if getattr(config, key) not in allowed:
            raise BitmojiError(f"{key} must be one of {', '.join(allowed)}, got {getattr(config, key)!r}")
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise BitmojiError("epochs, batch_size and lr must be positive")
    negative = [key for key in NON_NEGATIVE if getattr(config, key) < 0]
    if negative:
        raise BitmojiError(f"{', '.join(negative)} must not be negative")
    if config.shift >= 0.5 or config.scale >= 1 or config.jitter >= 1:
        raise BitmojiError("shift must be < 0.5, scale and jitter < 1")
    if config.width <= 0:
        raise BitmojiError(f"width must be positive, got {config.width}")
    if config.all_labelled and config.patience:
        raise BitmojiError(
            "--all-labelled trains without validation, so --patience (early stopping on val_acc) "
            "cannot apply: set patience to 0"
        )
    return config


NON_NEGATIVE = (
    "image_size",
    "threads",
    "patience",
    "momentum",
    "weight_decay",
    "label_smoothing",
    "shift",
    "scale",
    "jitter",
)


def _typed(key: str, value: Any, kind: type) -> Any:
    """`value` as the field's type; no silent truncation or bool/number mix-ups."""
    wrong = BitmojiError(f"config {key}={value!r} is not a {kind.__name__}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise wrong
    if isinstance(value, bool):
        raise wrong
    try:
        if kind is int:
            number = float(value)
            if not number.is_integer():
                raise wrong
            return int(number)
        return kind(value)
    except (TypeError, ValueError) as error:
        raise wrong from error
