"""The runs of an experiment as plain `RunRecord`s, for `bitmoji runs` (see comparison.py, which
orders and tabulates them without MLflow). No MLflow import at module level."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.tracking.names import (
    CV_FOLD,
    CV_RUN,
    EVALUATION_TAG,
    RUN_KIND_TAG,
    TUNE_RUN,
    TUNE_TRIAL,
    evaluation_experiment,
)

if TYPE_CHECKING:
    from bitmoji_ml.tracking.store import Store

PAGE = 1000
SYSTEM_TAG_PREFIX = "mlflow."
RESUMED_PREFIX = "resumed."  # the tags runs.TrainingRun.log_resume sets
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag of a nested run (mlflow_tags.MLFLOW_PARENT_RUN_ID)
# What `bitmoji runs` calls each kind of run; a run without a run_kind tag is a `bitmoji train`.
KIND_NAMES = {CV_RUN: "cv", CV_FOLD: "fold", TUNE_RUN: "tune", TUNE_TRIAL: "trial"}


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run as plain values: metrics are the latest values, tags exclude MLflow's own;
    `parent_run_id` is "" for a top-level run."""

    run_id: str
    name: str
    status: str
    start_time: int  # ms since the epoch, 0 when unknown
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    parent_run_id: str = ""

    @property
    def is_evaluation(self) -> bool:
        """Whether `bitmoji evaluate` logged this run."""
        return self.tags.get(EVALUATION_TAG) == "true"

    @property
    def settings(self) -> dict[str, str]:
        """The params as the run last trained with them: `train --resume` cannot change a param
        (MLflow params are immutable), so it tags `resumed.<key>` with the new value."""
        resumed = {
            key[len(RESUMED_PREFIX) :]: value
            for key, value in self.tags.items()
            if key.startswith(RESUMED_PREFIX)
        }
        return {**self.params, **resumed}

    @property
    def kind(self) -> str:
        """train, refit (`--all-labelled`), torchrun (several processes), cv, fold, tune or trial."""
        if self.tags.get(RUN_KIND_TAG) in KIND_NAMES:
            return KIND_NAMES[self.tags[RUN_KIND_TAG]]
        settings = self.settings
        if settings.get("all_labelled", "").lower() in ("true", "1"):
            return "refit"
        if settings.get("world_size", "1") not in ("", "1"):
            return "torchrun"
        return "train"


@dataclasses.dataclass(frozen=True)
class ExperimentRuns:
    """The runs of an experiment (top-level and nested) and the evaluation runs logged for it,
    with the experiments they were found in."""

    experiment: str
    training: list[RunRecord]
    evaluations: list[RunRecord]
    evaluations_experiment: str
    legacy_evaluations: int = 0  # evaluation runs an older version logged into `experiment`


def _record(run) -> RunRecord:
    tags = run.data.tags
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        status=run.info.status,
        start_time=run.info.start_time or 0,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags={key: value for key, value in tags.items() if not key.startswith(SYSTEM_TAG_PREFIX)},
        parent_run_id=tags.get(PARENT_TAG, ""),
    )


def _records(store: Store, experiment_id: str, filter_string: str) -> list[RunRecord]:
    from mlflow.exceptions import MlflowException

    found, token = [], None
    while True:
        try:
            page = store.client.search_runs(
                [experiment_id], filter_string=filter_string, max_results=PAGE, page_token=token
            )
        except MlflowException as error:
            if not filter_string:
                raise
            raise BitmojiError(
                f"--filter {filter_string!r}: {error.message.splitlines()[0]} (MLflow's search syntax, "
                "e.g. \"params.model = 'hybrid' and metrics.best_val_acc > 0.99\")"
            ) from error
        found += page
        token = page.token
        if not token:
            break
    return [_record(run) for run in found]


def experiment_runs(store: Store, *, experiment: str, filter_string: str = "") -> ExperimentRuns:
    """Every run of `experiment` and of its evaluations experiment that matches `filter_string`
    (MLflow's search syntax; evaluation runs that older versions logged into `experiment` itself
    count as evaluations). A BitmojiError says there are no runs yet when `experiment` does not
    exist."""
    runs = _records(store, store.experiment_id(experiment, create=False), filter_string)
    evaluations_name = evaluation_experiment(experiment)
    evaluations_id = store.find_experiment(evaluations_name)
    legacy = [run for run in runs if run.is_evaluation]
    evaluations = list(legacy)
    if evaluations_id is not None:
        evaluations += _records(store, evaluations_id, filter_string)
    training = [run for run in runs if not run.is_evaluation]
    return ExperimentRuns(experiment, training, evaluations, evaluations_name, len(legacy))
