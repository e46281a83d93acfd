"""What `--resume` may change. A resumed run continues the checkpoint's recipe: every setting
that shapes the weights must match it, the length of training may change, and the machine
settings come from the new command (a run trained on CUDA resumes on a CPU machine)."""

from __future__ import annotations

import dataclasses
from typing import Any

from bitmoji_ml.data.classes import Classes
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.recipe import RESUME_POLICY, Recipe, Rule, recipe_from_values
from bitmoji_ml.training.settings import default_run_name, resolve_config

# What --resume may do with each setting is declared with the setting (recipe.py, `resume=`).
# Besides the config, the lists must be the ones the run trained on (same classes, same manifest
# digest).
# The number of processes may change (tagged `resumed.world_size`): `batch_size` is the global
# batch, so the recipe, and the learning-rate schedule, stay the same.


@dataclasses.dataclass
class ResumedConfig:
    """The config a resumed run continues with, and the settings that changed (new values)."""

    config: Recipe
    changed: dict[str, str]


def resume_config(saved: Recipe, requested: dict[str, Any]) -> ResumedConfig:
    """The checkpoint's `saved` (resolved) config with the `requested` values (preset, config
    file and flags that were given) applied as RESUME_POLICY allows; a requested value that
    would change a MATCH setting is an error naming each such setting with both values."""
    recipe_from_values(requested)  # unknown keys and bad values are refused as for a new run
    values = {}
    for field, rule in RESUME_POLICY.items():
        if field in requested:
            values[field] = requested[field]
        elif rule is not Rule.MACHINE:
            values[field] = getattr(saved, field)
    config = resolve_config(recipe_from_values(values))
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


def check_resumable(*, saved: Recipe, config: Recipe, epochs_done: int, run_id: str) -> None:
    """A resumed run must have epochs left to train."""
    if config.epochs <= epochs_done:
        raise BitmojiError(
            f"run {run_id} has trained {epochs_done} of its {saved.epochs} epochs: "
            f"pass --epochs N with N > {epochs_done} to train it longer"
        )


def check_same_classes(*, saved: Classes, classes: Classes, lists_dir: object, run_id: str) -> None:
    """A resumed run must learn the classes it has learnt so far, in the same order: its last
    layer has one output per class, and output i means class i of the lists."""
    if saved != classes:
        raise BitmojiError(
            f"run {run_id} learnt {len(saved)} classes ({', '.join(saved.names)}); the lists in "
            f"{lists_dir} name {len(classes)} ({', '.join(classes.names)}): pass the lists it trained "
            "on (--lists), or start a new run"
        )


def check_same_lists(*, saved_digest: str, digest: str, lists_dir: object, run_id: str) -> None:
    """A resumed run must see the lists it trained on: other lists would mix splits."""
    if saved_digest != digest:
        raise BitmojiError(
            f"the lists in {lists_dir} (digest {digest[:12]}) are not the ones run {run_id} trained "
            f"on (digest {saved_digest[:12] or 'unknown'}): pass the same --lists, or start a new run"
        )


def resumed_run_name(*, saved: Recipe, config: Recipe, saved_name: str, requested: str | None) -> str:
    """`--run-name` if given; else the default name for the new settings when the run had its
    default name; else the name it had."""
    if requested:
        return requested
    return default_run_name(config) if saved_name == default_run_name(saved) else saved_name
