"""The runs of an experiment as plain `RunRecord`s, for `bitmoji runs` (see comparison.py, which
orders and tabulates them without MLflow). No MLflow import at module level."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bitmoji_ml.tracking.names import EVALUATION_TAG, evaluation_experiment

if TYPE_CHECKING:
    from bitmoji_ml.tracking.store import Store

PAGE = 1000
SYSTEM_TAG_PREFIX = "mlflow."


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run as plain values: metrics are the latest values, tags exclude MLflow's own."""

    run_id: str
    name: str
    status: str
    start_time: int  # ms since the epoch, 0 when unknown
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]

    @property
    def is_evaluation(self) -> bool:
        """Whether `bitmoji evaluate` logged this run."""
        return self.tags.get(EVALUATION_TAG) == "true"


@dataclasses.dataclass(frozen=True)
class ExperimentRuns:
    """The training runs of an experiment and the evaluation runs logged for it."""

    experiment: str
    training: list[RunRecord]
    evaluations: list[RunRecord]


def _records(store: Store, experiment_id: str) -> list[RunRecord]:
    found, token = [], None
    while True:
        page = store.client.search_runs([experiment_id], max_results=PAGE, page_token=token)
        found += page
        token = page.token
        if not token:
            break
    return [
        RunRecord(
            run_id=run.info.run_id,
            name=run.info.run_name or "",
            status=run.info.status,
            start_time=run.info.start_time or 0,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            tags={
                key: value for key, value in run.data.tags.items() if not key.startswith(SYSTEM_TAG_PREFIX)
            },
        )
        for run in found
    ]


def experiment_runs(store: Store, *, experiment: str) -> ExperimentRuns:
    """Every run of `experiment` and of its evaluations experiment (evaluation runs that older
    versions logged into `experiment` itself count as evaluations). A BitmojiError says there
    are no runs yet when `experiment` does not exist."""
    runs = _records(store, store.experiment_id(experiment, create=False))
    evaluations_id = store.find_experiment(evaluation_experiment(experiment))
    evaluations = [run for run in runs if run.is_evaluation]
    if evaluations_id is not None:
        evaluations += _records(store, evaluations_id)
    return ExperimentRuns(experiment, [run for run in runs if not run.is_evaluation], evaluations)
