"""The MLflow run of `bitmoji train` (`TrainingRun`) and the checkpoints it keeps.

Lineage: the run has the train and val lists as dataset inputs (each with its own digest);
only the `val_*` metrics are linked to the validation dataset. The run's best checkpoint is ONE
logged model (an output of the run, `<model>-best`), created at the first best epoch and
updated at each new one: its best.pt is replaced and the epoch's `val_*` metrics are linked to
it, so its latest metrics are those of the best.pt it holds and `search_logged_models` (which
orders by a model's latest value) ranks checkpoints by their score on a given validation list.
It is READY from its first best epoch on, so an interrupted run's best so far is exportable.
The per-epoch history stays in the run's metrics.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import (
    LoggedModel,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    Run,
    RunStatus,
    RunTag,
)
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bitmoji_ml.data.lists import manifest_classes
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.recipe import RECIPE_FILE
from bitmoji_ml.tracking.datasets import RunDatasets, lists_datasets
from bitmoji_ml.tracking.names import (
    BEST_ON_VAL,
    CHECKPOINT_DIR,
    CHECKPOINT_MODEL_TYPE,
    PLOTS_DIR,
    SELECTION_TAG,
    classes_param,
)
from bitmoji_ml.tracking.store import Store, local_path

if TYPE_CHECKING:
    import numpy as np

VALIDATION_PREFIX = "val_"  # metrics measured on the validation list


def end_status(kind: type[BaseException] | None) -> str:
    """How a run ends: FINISHED, KILLED on Ctrl-C, FAILED on any other exception."""
    if kind is None:
        status = RunStatus.FINISHED
    elif issubclass(kind, KeyboardInterrupt):
        status = RunStatus.KILLED
    else:
        status = RunStatus.FAILED
    return RunStatus.to_string(status)


def now_ms() -> int:
    return int(time.time() * 1000)


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def environment_tags() -> dict[str, str]:
    """Where a run ran: Python version, CPU count and (in a git checkout) the commit."""
    tags = {"python": platform.python_version(), "cpu_count": str(os.cpu_count())}
    commit = _git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def new_run(store: Store, *, experiment_id: str, run_name: str | None, parent_run_id: str | None):
    """A new run with MLflow's context tags; with `parent_run_id`, nested under that run (the UI
    shows it inside its parent)."""
    tags = resolve_tags({MLFLOW_PARENT_RUN_ID: parent_run_id} if parent_run_id else None)
    return store.client.create_run(experiment_id, run_name=run_name, tags=tags)


class TrainingRun:
    """One MLflow run of `bitmoji train` (or a fold of `cv`, a trial of `tune`, nested under
    `parent_run_id`): a context manager that ends the run FINISHED, FAILED, or KILLED on Ctrl-C,
    plus the logging calls the training loop makes. `selection` says how its best.pt was chosen
    (names.BEST_ON_VAL or names.LAST_EPOCH) and tags each checkpoint logged model with it."""

    def __init__(
        self,
        store: Store,
        *,
        experiment_id: str,
        run_name: str | None = None,
        resume_run_id: str | None = None,
        parent_run_id: str | None = None,
        selection: str = BEST_ON_VAL,
    ):
        self.store = store
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.resume_run_id = resume_run_id
        self.parent_run_id = parent_run_id
        self.selection = selection
        self.run_id = ""
        self._artifact_uri = ""
        self._best_model_id: str | None = None  # the run's checkpoint logged model, once made
        self._best_model_pending = False  # made, but not READY yet
        self._datasets: RunDatasets | None = None

    def __enter__(self) -> TrainingRun:
        client = self.store.client
        if self.resume_run_id:
            run = self.store.get_run(self.resume_run_id)
            if run.info.experiment_id != self.experiment_id:
                raise BitmojiError(f"run {self.resume_run_id} belongs to another experiment")
            client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            best = checkpoint_model(self.store, run)
            if best is not None:  # killed before its first READY: made READY at the next best
                self._best_model_id = best.model_id
                self._best_model_pending = best.status != LoggedModelStatus.READY
        else:
            run = new_run(
                self.store,
                experiment_id=self.experiment_id,
                run_name=self.run_name,
                parent_run_id=self.parent_run_id,
            )
        self.run_id, self._artifact_uri = run.info.run_id, run.info.artifact_uri
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.store.client.set_terminated(self.run_id, status=end_status(kind))

    def log_start(
        self,
        *,
        params: dict[str, str],
        tags: dict[str, str],
        manifest: dict,
        lists_dir: Path | None = None,
        all_labelled: bool = False,
        datasets: RunDatasets | None = None,
        recipe: str | None = None,
    ) -> None:
        """A new run gets `params` (plus the manifest's classes), `tags` (plus environment_tags()
        and the data digest) and its dataset inputs: `datasets`, else the lists of `lists_dir`
        (train and val, or both for training with `all_labelled`); a resumed run only (re)links
        the datasets. `recipe` (TOML text) is logged as recipe.toml, replacing a resumed run's
        with the recipe it continues with."""
        if datasets is None:
            if lists_dir is None:
                raise ValueError("log_start needs lists_dir or datasets")
            datasets = lists_datasets(lists_dir=lists_dir, manifest=manifest, all_labelled=all_labelled)
        self._datasets = datasets
        if not self.resume_run_id:
            tags = {**environment_tags(), "data_digest": manifest.get("digest", ""), **tags}
            params = {**params, **classes_param(manifest_classes(manifest).names)}
            self.store.client.log_batch(
                self.run_id,
                params=[Param(key, str(value)) for key, value in params.items()],
                tags=[RunTag(key, str(value)) for key, value in tags.items()],
            )
        self.store.client.log_inputs(self.run_id, datasets=datasets.inputs())
        if recipe is not None:
            self.store.client.log_text(self.run_id, recipe, RECIPE_FILE)

    def log_tags(self, tags: dict[str, str]) -> None:
        """Set tags on the run (e.g. how a tuning trial ended)."""
        self.store.client.log_batch(
            self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()]
        )

    def log_resume(self, *, changed: dict[str, str], run_name: str) -> None:
        """After --resume with allowed changes: tag `resumed.<key>` = new value (params are
        immutable, so the original params stay) and rename the run to `run_name`."""
        self.store.client.log_batch(
            self.run_id, tags=[RunTag(f"resumed.{key}", str(value)) for key, value in changed.items()]
        )
        self.store.client.update_run(self.run_id, name=run_name)

    def log_epoch(
        self, *, epoch: int, metrics: dict[str, float], best_checkpoint: Path | None, model_name: str
    ) -> str:
        """The epoch's metrics at step = epoch. A new best checkpoint is logged first, as a run
        artifact and into the run's checkpoint logged model, whose val_* metrics are linked to
        this epoch. Returns where best.pt lives ("" when `best_checkpoint` is None)."""
        location, model_id = "", None
        if best_checkpoint is not None:
            location = self.log_checkpoint(best_checkpoint)
            model_id = self._checkpoint_model(epoch=epoch, path=best_checkpoint, model_name=model_name)
        self.store.client.log_batch(self.run_id, metrics=self._epoch_metrics(epoch, metrics, model_id))
        if model_id is not None and self._best_model_pending:
            self.store.client.finalize_logged_model(model_id, LoggedModelStatus.READY)
            self._best_model_pending = False
        return location

    def _epoch_metrics(self, epoch: int, metrics: dict[str, float], model_id: str | None) -> list[Metric]:
        """val_* are linked to the validation dataset (and the checkpoint); the rest (train_*,
        lr, timings) belong to the run alone."""
        timestamp, val = now_ms(), self._datasets.validation if self._datasets else None
        linked = {"model_id": model_id}
        if val is not None:
            linked.update(dataset_name=val.name, dataset_digest=val.digest)
        return [
            Metric(
                key, float(value), timestamp, epoch, **(linked if key.startswith(VALIDATION_PREFIX) else {})
            )
            for key, value in metrics.items()
            if key != "epoch"
        ]

    def _checkpoint_model(self, *, epoch: int, path: Path, model_name: str) -> str:
        """The run's checkpoint logged model holding `path` (best.pt) as of `epoch`: made at the
        first best epoch (or found again on --resume), then its file and `step` replaced."""
        client = self.store.client
        if self._best_model_id is None:
            model = client.create_logged_model(
                self.experiment_id,
                name=f"{model_name}-best",
                source_run_id=self.run_id,
                tags={"model": model_name, SELECTION_TAG: self.selection},
                model_type=CHECKPOINT_MODEL_TYPE,
            )
            self._best_model_id, self._best_model_pending = model.model_id, True
            client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step=epoch)])
        client.log_model_artifact(self._best_model_id, str(path))
        client.set_logged_model_tags(self._best_model_id, {"step": str(epoch)})
        return self._best_model_id

    def log_checkpoint(self, path: Path) -> str:
        """Log `path` under checkpoints/ of the run; return where it now lives."""
        self.store.client.log_artifact(self.run_id, str(path), CHECKPOINT_DIR)
        return local_path(f"{self._artifact_uri}/{CHECKPOINT_DIR}/{Path(path).name}")

    def log_plots(
        self,
        history: list[dict[str, float]],
        *,
        best_epoch: int,
        confusion: np.ndarray | None,
        class_names: tuple[str, ...],
    ) -> None:
        """The learning curves and the best epoch's confusion matrix, drawn here (in the MLflow
        process of `bitmoji train`, which imports matplotlib for this call) and logged under
        plots/."""
        from bitmoji_ml.plots import training_plots

        with tempfile.TemporaryDirectory(prefix="bitmoji-plots-") as folder:
            kwargs = {"best_epoch": best_epoch, "confusion": confusion, "class_names": class_names}
            training_plots(Path(folder), history, **kwargs)
            self.store.client.log_artifacts(self.run_id, folder, PLOTS_DIR)

    def log_summary(self, metrics: dict[str, float]) -> None:
        """Run-level results (no step), for sorting runs."""
        timestamp = now_ms()
        self.store.client.log_batch(
            self.run_id, metrics=[Metric(key, float(value), timestamp, 0) for key, value in metrics.items()]
        )


def checkpoint_model(store: Store, run: Run) -> LoggedModel | None:
    """The checkpoint logged model of `run` (a resumed run keeps updating it); the newest one
    for a run from before there was one per run."""
    outputs = sorted(run.outputs.model_outputs if run.outputs else [], key=lambda output: output.step)
    for output in reversed(outputs):
        model = store.client.get_logged_model(output.model_id)
        if model.model_type == CHECKPOINT_MODEL_TYPE:
            return model
    return None


def download_run_checkpoint(store: Store, *, run_id: str, name: str, folder: Path) -> Path:
    """checkpoints/`name` of run `run_id`, downloaded into `folder`."""
    store.get_run(run_id)  # an unknown run is its own error
    try:
        return Path(store.client.download_artifacts(run_id, f"{CHECKPOINT_DIR}/{name}", str(folder)))
    except Exception as error:
        raise BitmojiError(f"run {run_id} has no {CHECKPOINT_DIR}/{name}") from error


def end_run_if_running(store: Store, *, run_id: str, status: str) -> str:
    """End run `run_id` as `status` if it is still RUNNING (the process training it died before
    it could end it); return the run's status now."""
    run = store.get_run(run_id)
    if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
        return run.info.status
    store.client.set_terminated(run_id, status=status)
    return status
