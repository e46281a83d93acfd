"""Where a training run logs (rank 0 only): in this process (`Tracking`: a Store and the
experiment), or through `tracking.mlflow_process.MlflowProcess`, the child that `bitmoji train`
starts before it imports torch. Both make the run with `.run(...)`; a resumed run is always
logged from this process."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bitmoji_ml.training import distributed

if TYPE_CHECKING:  # mlflow loads only when a run starts
    from bitmoji_ml.tracking.mlflow_process import ChildRun, MlflowProcess
    from bitmoji_ml.tracking.runs import TrainingRun
    from bitmoji_ml.tracking.store import Store


@dataclasses.dataclass
class Tracking:
    """Where rank 0 logs, in this process: the store and the experiment's id."""

    store: Store
    experiment_id: str

    @property
    def uri(self) -> str:
        return self.store.uri

    def run(self, *, run_name: str, selection: str, resume_run_id: str | None = None) -> TrainingRun:
        from bitmoji_ml.tracking.runs import TrainingRun

        return TrainingRun(
            self.store,
            experiment_id=self.experiment_id,
            run_name=run_name,
            resume_run_id=resume_run_id,
            selection=selection,
        )


def open_tracking(store: Store | None, experiment: str) -> Tracking:
    """The store (`store`, else the configured one, checked to be usable) and the experiment."""
    from bitmoji_ml.tracking.store import Store

    store = store or Store.open()
    return Tracking(store, store.experiment_id(experiment))


def open_run(
    tracking: Tracking | MlflowProcess | None, name: str, resume_run_id: str | None, selection: str
) -> TrainingRun | ChildRun | distributed.NullRun:
    """Rank 0's MLflow run (a new one, or `resume_run_id` continued); a NullRun on the others."""
    if tracking is None:
        return distributed.NullRun()
    if not resume_run_id:
        return tracking.run(run_name=name, selection=selection)
    assert isinstance(tracking, Tracking), "a resumed run is logged from this process"
    return tracking.run(run_name=name, selection=selection, resume_run_id=resume_run_id)
