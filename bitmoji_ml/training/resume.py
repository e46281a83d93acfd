"""What `--resume` may change. A resumed run continues the checkpoint's recipe: every setting
that shapes the weights must match it, the length of training may change, and the machine
settings come from the new command (a run trained on CUDA resumes on a CPU machine)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from bitmoji_ml.config import TrainConfig, config_from_dict
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.training.settings import default_run_name, resolve_config


class Rule(enum.Enum):
    MATCH = "must match the checkpoint"
    CONTINUE = "the checkpoint's value unless given"
    MACHINE = "this command's value (default if not given), never the checkpoint's"


RESUME_POLICY: dict[str, Rule] = {
    "model": Rule.MATCH,
    "image_size": Rule.MATCH,  # compared as resolved: 0 and the model's size are the same
    "batch_size": Rule.MATCH,
    "optimizer": Rule.MATCH,
    "lr": Rule.MATCH,
    "momentum": Rule.MATCH,
    "weight_decay": Rule.MATCH,
    "schedule": Rule.MATCH,
    "label_smoothing": Rule.MATCH,
    "ema": Rule.MATCH,
    "seed": Rule.MATCH,
    "flip": Rule.MATCH,
    "shift": Rule.MATCH,
    "scale": Rule.MATCH,
    "jitter": Rule.MATCH,
    "width": Rule.MATCH,
    "all_labelled": Rule.MATCH,  # the same images, the same (absent) validation
    "epochs": Rule.CONTINUE,  # the LR schedule is re-planned (training/schedule.py)
    "patience": Rule.CONTINUE,
    "device": Rule.MACHINE,
    "threads": Rule.MACHINE,
    "disk_cache": Rule.MACHINE,
    "sync_batchnorm": Rule.MACHINE,  # how the devices share BatchNorm, chosen per launch
}
# Besides the config, the lists must be the ones the run trained on (same manifest digest).
# The number of processes may change (tagged `resumed.world_size`): `batch_size` is the global
# batch, so the recipe, and the learning-rate schedule, stay the same.


@dataclasses.dataclass
class ResumedConfig:
    """The config a resumed run continues with, and the settings that changed (new values)."""

    config: TrainConfig
    changed: dict[str, str]


def resume_config(saved: TrainConfig, requested: dict[str, Any]) -> ResumedConfig:
    """The checkpoint's `saved` (resolved) config with the `requested` values (preset, config
    file and flags that were given) applied as RESUME_POLICY allows; a requested value that
    would change a MATCH setting is an error naming each such setting with both values."""
    config_from_dict(requested)  # unknown keys and bad values are refused as for a new run
    values = {}
    for field, rule in RESUME_POLICY.items():
        if field in requested:
            values[field] = requested[field]
        elif rule is not Rule.MACHINE:
            values[field] = getattr(saved, field)
    config = resolve_config(config_from_dict(values))
    differs = [field for field in RESUME_POLICY if getattr(config, field) != getattr(saved, field)]
    mismatched = [field for field in differs if RESUME_POLICY[field] is Rule.MATCH]
    if mismatched:
        described = ", ".join(
            f"{field} (checkpoint {getattr(saved, field)!r}, requested {getattr(config, field)!r})"
            for field in mismatched
        )
        raise BitmojiError(
            f"--resume continues the checkpoint's recipe, so these must match it: {described}. "
            "Drop those settings, or start a new run to change them."
        )
    return ResumedConfig(config, {field: str(getattr(config, field)) for field in differs})


def check_resumable(*, saved: TrainConfig, config: TrainConfig, epochs_done: int, run_id: str) -> None:
    """A resumed run must have epochs left to train."""
    if config.epochs <= epochs_done:
        raise BitmojiError(
            f"run {run_id} has trained {epochs_done} of its {saved.epochs} epochs: "
            f"pass --epochs N with N > {epochs_done} to train it longer"
        )


def check_same_lists(*, saved_digest: str, digest: str, lists_dir: object, run_id: str) -> None:
    """A resumed run must see the lists it trained on: other lists would mix splits."""
    if saved_digest != digest:
        raise BitmojiError(
            f"the lists in {lists_dir} (digest {digest[:12]}) are not the ones run {run_id} trained "
            f"on (digest {saved_digest[:12] or 'unknown'}): pass the same --lists, or start a new run"
        )


def resumed_run_name(
    *, saved: TrainConfig, config: TrainConfig, saved_name: str, requested: str | None
) -> str:
    """`--run-name` if given; else the default name for the new settings when the run had its
    default name; else the name it had."""
    if requested:
        return requested
    return default_run_name(config) if saved_name == default_run_name(saved) else saved_name
