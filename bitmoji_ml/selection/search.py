"""What `bitmoji tune` searches and how it scores a trial: the search space, the objective (an
accuracy with its loss as tie-break) and the best recipe as a TOML file for `train --config`.
No Optuna import here: `sample_recipe` takes any object with Optuna's `suggest_*` methods."""

from __future__ import annotations

from typing import Any

from bitmoji_ml.models import model_spec
from bitmoji_ml.recipe import SEARCH_SPACE

# The search space is declared with each setting (recipe.py, `search=`). Image sizes and widths
# stay where the ONNX model is < 1 MB and inference costs at most (80/72)^2 = 1.23x the default's.
LOSS_CAP = 10.0  # cross-entropy above this counts as this in the tie-break


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
