"""Runs that hold other runs (MLflow nested runs): a `bitmoji cv` run with one child per fold,
a `bitmoji tune` run with one child per trial. A child names its parent in the
`mlflow.parentRunId` tag (see runs.TrainingRun's `parent_run_id`), and the UI shows it inside.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import DatasetInput, Metric, Param, RunTag

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.tracking.names import RUN_KIND_TAG
from bitmoji_ml.tracking.runs import end_status, environment_tags, new_run, now_ms
from bitmoji_ml.tracking.store import Store


class ParentRun:
    """A run of kind `kind` (names.CV_RUN, names.TUNE_RUN, ...): a context manager that ends it
    FINISHED, FAILED, or KILLED on Ctrl-C; children are created with its `run_id` as parent."""

    def __init__(
        self,
        store: Store,
        *,
        experiment_id: str,
        run_name: str,
        kind: str,
        parent_run_id: str | None = None,
    ):
        self.store = store
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.kind = kind
        self.parent_run_id = parent_run_id
        self.run_id = ""

    def __enter__(self) -> ParentRun:
        run = new_run(
            self.store,
            experiment_id=self.experiment_id,
            run_name=self.run_name,
            parent_run_id=self.parent_run_id,
        )
        self.run_id = run.info.run_id
        self.log_tags({**environment_tags(), RUN_KIND_TAG: self.kind})
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.store.client.set_terminated(self.run_id, status=end_status(kind))

    def log_params(self, params: dict[str, object]) -> None:
        self.store.client.log_batch(
            self.run_id, params=[Param(key, str(value)) for key, value in params.items()]
        )

    def log_tags(self, tags: dict[str, object]) -> None:
        self.store.client.log_batch(
            self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()]
        )

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        timestamp = now_ms()
        self.store.client.log_batch(
            self.run_id,
            metrics=[Metric(key, float(value), timestamp, step) for key, value in metrics.items()],
        )

    def log_inputs(self, datasets: list[DatasetInput]) -> None:
        self.store.client.log_inputs(self.run_id, datasets=datasets)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.store.client.log_artifact(self.run_id, str(path), artifact_path)


def newest_run_of_kind(store: Store, *, experiment: str, kind: str) -> str:
    """The id of the newest FINISHED run of `kind` in `experiment`, or a BitmojiError."""
    experiment_id = store.experiment_id(experiment, create=False)
    found = store.client.search_runs(
        [experiment_id],
        filter_string=f"tags.{RUN_KIND_TAG} = '{kind}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        raise BitmojiError(f"experiment {experiment!r} has no finished `bitmoji {kind}` run yet")
    return found[0].info.run_id


def download_run_file(store: Store, *, run_id: str, artifact: str, folder: Path, kind: str) -> Path:
    """Artifact `artifact` of run `run_id` (a `bitmoji {kind}` run), downloaded into `folder`."""
    run = store.get_run(run_id)
    if run.data.tags.get(RUN_KIND_TAG) != kind:
        raise BitmojiError(f"run {run_id} is not a `bitmoji {kind}` run (it has no {artifact})")
    try:
        return Path(store.client.download_artifacts(run_id, artifact, str(folder)))
    except Exception as error:
        raise BitmojiError(f"run {run_id} has no {artifact} (did it finish?)") from error


def run_tag(store: Store, *, run_id: str, key: str) -> str | None:
    """Tag `key` of run `run_id`, or None when the run has no such tag."""
    return store.get_run(run_id).data.tags.get(key)


def add_results(store: Store, *, run_id: str, files: list[Path], metrics: dict[str, float]) -> None:
    """Add `files` (at the artifact root) and `metrics` (step 0) to the finished run `run_id`,
    e.g. what `bitmoji audit` found in a cv run."""
    for path in files:
        store.client.log_artifact(run_id, str(path))
    timestamp = now_ms()
    store.client.log_batch(
        run_id, metrics=[Metric(key, float(value), timestamp, 0) for key, value in metrics.items()]
    )


def finished_children(store: Store, *, run_id: str, kind: str, child_kind: str) -> list:
    """The FINISHED children of kind `child_kind` of the finished `bitmoji {kind}` run `run_id`,
    in start order; a BitmojiError when `run_id` is not such a run."""
    run = store.get_run(run_id)
    if run.data.tags.get(RUN_KIND_TAG) != kind:
        raise BitmojiError(f"run {run_id} is not a `bitmoji {kind}` run")
    if run.info.status != "FINISHED":
        raise BitmojiError(f"run {run_id} is {run.info.status}, not FINISHED")
    return store.client.search_runs(
        [run.info.experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{run_id}' and tags.{RUN_KIND_TAG} = '{child_kind}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time ASC"],
    )
