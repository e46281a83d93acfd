"""What `bitmoji tune` searches and how it scores a trial: the search space, the objective (an
accuracy with its loss as tie-break) and the best recipe as a TOML file for `train --config`.
No Optuna import here: `sample_recipe` takes any object with Optuna's `suggest_*` methods."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from bitmoji_ml.config import TrainConfig
from bitmoji_ml.models import model_spec
from bitmoji_ml.training.resume import RESUME_POLICY, Rule

# name -> (kind, arguments). Image sizes and widths stay where the ONNX model is < 1 MB and
# inference costs at most (80/72)^2 = 1.23x the default's per image.
SEARCH_SPACE: dict[str, tuple[str, tuple]] = {
    "lr": ("log-float", (5e-4, 1e-2)),
    "weight_decay": ("log-float", (1e-5, 5e-3)),
    "label_smoothing": ("float", (0.0, 0.2)),
    "shift": ("float", (0.0, 0.15)),
    "scale": ("float", (0.0, 0.15)),
    "jitter": ("float", (0.0, 0.4)),
    "image_size": ("choice", (56, 64, 72, 80)),
    "width": ("choice", (0.5, 0.75, 1.0)),
    "epochs": ("int", (10, 30)),
}
LOSS_CAP = 10.0  # cross-entropy above this counts as this in the tie-break
# Settings a recipe file leaves to the machine (and to the command: --all-labelled).
NOT_RECIPE = {field for field, rule in RESUME_POLICY.items() if rule is Rule.MACHINE} | {"all_labelled"}


def searched_settings(*, fixed: set[str], model: str) -> list[str]:
    """The settings a study searches: the space minus those fixed by a flag or config file,
    and minus `width` for a model that has one size only."""
    return [
        name for name in SEARCH_SPACE if name not in fixed and (name != "width" or model_spec(model).scalable)
    ]


def sample_recipe(trial: Any, names: list[str]) -> dict[str, Any]:
    """One value per searched setting, drawn through `trial` (an optuna.Trial)."""
    values: dict[str, Any] = {}
    for name in names:
        kind, arguments = SEARCH_SPACE[name]
        if kind == "choice":
            values[name] = trial.suggest_categorical(name, list(arguments))
        elif kind == "int":
            values[name] = trial.suggest_int(name, *arguments)
        else:  # 3 significant digits: a recipe file that reads well, a grid fine enough
            drawn = trial.suggest_float(name, *arguments, log=kind == "log-float")
            values[name] = float(f"{drawn:.3g}")
    return values


def objective_value(*, accuracy: float, loss: float, images: int) -> float:
    """`accuracy`, minus a tie-break term from `loss` that is always smaller than half of one
    image's worth of accuracy (1 / images): a higher accuracy always wins, and among equal
    accuracies the lower loss does."""
    return accuracy - min(max(loss, 0.0), LOSS_CAP) / LOSS_CAP / (2 * images)


def recipe_values(config: TrainConfig) -> dict[str, Any]:
    """The config's recipe settings, in field order (no device, threads, disk cache)."""
    return {key: value for key, value in dataclasses.asdict(config).items() if key not in NOT_RECIPE}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string for plain text


def recipe_toml(values: dict[str, Any], comments: list[str]) -> str:
    """`values` as a TOML file of TrainConfig keys (what `train --config` reads)."""
    lines = [f"# {comment}" for comment in comments]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"
