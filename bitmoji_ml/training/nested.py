"""Training inside a run that another job opened: the folds of `bitmoji cv` and the trials of
`bitmoji tune`. The caller decoded the images once for all of them; each training logs what
`bitmoji train` logs (params, tags, dataset inputs, per-epoch metrics, checkpoints, the
checkpoint logged model, plots, the summary). No resume: a fold or trial is rerun, not resumed.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.recipe import Recipe
from bitmoji_ml.training.data import TrainData
from bitmoji_ml.training.job import (
    build_state,
    checkpoint_header,
    recipe_file,
    run_tags,
    summary_metrics,
    train_in_run,
)
from bitmoji_ml.training.loop import Tracker, TrainResult
from bitmoji_ml.training.state import TrainState

if TYPE_CHECKING:
    from bitmoji_ml.tracking.datasets import RunDatasets
    from bitmoji_ml.tracking.runs import TrainingRun


@dataclasses.dataclass
class NestedTraining:
    """The finished training and its state: `state.evaluated` holds the final weights (the EMA
    average when EMA is on), which are best.pt when the run did not select on val_acc."""

    result: TrainResult
    state: TrainState


def train_on_data(
    *,
    run: TrainingRun,
    config: Recipe,
    data: TrainData,
    datasets: RunDatasets,
    params: dict[str, object] | None = None,
    tags: dict[str, str] | None = None,
    select_best: bool = True,
    tracker: Tracker | None = None,
) -> NestedTraining:
    """Train a fresh model on `data` inside the open `run` (reporting through `tracker`, a
    wrapper of the run, when given); `params` and `tags` are logged besides the config's."""
    if config.teacher:  # a cv ensemble teacher trained on every fold: its targets would leak
        raise BitmojiError(
            "a teacher (distillation) applies to `bitmoji train` only, not to cv folds or tune trials"
        )
    state = build_state(config, data, resume=None)  # the state, steps and LR plan `train` builds
    run.log_start(
        params={**config.to_params(), **{key: str(value) for key, value in (params or {}).items()}},
        tags={**run_tags(config, state), **(tags or {})},
        manifest=data.manifest,
        datasets=datasets,
        recipe=recipe_file(config),
    )
    header = checkpoint_header(config, data.manifest, run.run_id, run.run_name or "")
    hint = "a cv fold or tune trial is not resumed: run `bitmoji cv` again, or the same `bitmoji tune` (its study continues)"
    result = train_in_run(
        config, data, state, tracker or run, header, select_best=select_best, rerun_hint=hint
    )
    run.log_summary(summary_metrics(result, selected=select_best))
    return NestedTraining(result, state)
