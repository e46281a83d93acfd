"""Every MLflow call of the project: store setup, run logging, checkpoints as logged models,
best-model lookup and the model registry."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from bitmoji_ml import paths, plots
from bitmoji_ml.data.lists import LIST_FILES, read_list
from bitmoji_ml.errors import BitmojiError

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_MODEL_TYPE = "bitmoji-checkpoint"
SQLITE_PREFIX = "sqlite:///"


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the project's SQLite store under mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or paths.DEFAULT_TRACKING_URI


def _artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts go in an `artifacts/` folder beside the database."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return (Path(uri[len(SQLITE_PREFIX) :]).parent / "artifacts").resolve().as_uri()


def local_path(uri: str) -> str:
    """A file:// artifact URI as a plain path; other URIs unchanged."""
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri


def connect(experiment: str | None = None) -> str | None:
    """Point MLflow at the store, fail fast with a clear message if it is unusable, and return
    the id of `experiment` (created when missing)."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # An unreachable server should fail in seconds, not after minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    uri = tracking_uri()
    if uri == paths.DEFAULT_TRACKING_URI:
        paths.MLRUNS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        mlflow.set_tracking_uri(uri)
        client = MlflowClient()
        client.search_experiments(max_results=1)
        if experiment is None:
            return None
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        return client.create_experiment(experiment, artifact_location=_artifact_root(uri))
    except Exception as error:  # any failure to reach or open the store
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BitmojiError(
            f"cannot use the MLflow tracking store {uri!r}: {reason[:300]}. Fix or unset "
            f"MLFLOW_TRACKING_URI (the default is {paths.DEFAULT_TRACKING_URI})."
        ) from error


def experiment_id_or_error(experiment: str) -> str:
    """The id of an existing experiment, or an error saying there are no runs yet."""
    connect()
    found = MlflowClient().get_experiment_by_name(experiment)
    if found is None:
        raise BitmojiError(f"no runs yet: experiment {experiment!r} does not exist (run `bitmoji train`)")
    return found.experiment_id


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def _labelled_dataset(
    images: list[str], labels: list[int], source: Path, name: str, digest: str | None = None
):
    """An MLflow dataset of (image file name, label) rows."""
    frame = pd.DataFrame({"image": images, "label": labels})
    with warnings.catch_warnings():  # MLflow's notes on source resolution and integer schemas
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.data.from_pandas(
            frame, source=str(Path(source).resolve()), targets="label", name=name, digest=digest
        )


def _list_dataset(lists_dir: Path, split: str, digest: str):
    path = Path(lists_dir) / LIST_FILES[split]
    entries = read_list(path)
    images, labels = [image.name for image, _ in entries], [label for _, label in entries]
    return _labelled_dataset(images, labels, path, f"bitmoji-{split}", digest[:16])


def default_run_name(config: Any, image_size: int) -> str:
    """A run name that says the model and its key settings, e.g. compact-64px-e20-bs64-adamw-lr0.003."""
    return f"{config.model}-{image_size}px-e{config.epochs}-bs{config.batch_size}-{config.optimizer}-lr{config.lr:g}"


class RunTracker:
    """One MLflow run of `bitmoji train`: a context manager that ends the run as FINISHED,
    FAILED or KILLED (Ctrl-C), plus the logging calls the training loop makes."""

    def __init__(self, experiment_id: str, run_name: str | None = None, resume_run_id: str | None = None):
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.resume_run_id = resume_run_id
        self.run_id = ""
        self.model_name = ""
        self.val_dataset = None

    def __enter__(self) -> RunTracker:
        if self.resume_run_id:
            run = self.get_run(self.resume_run_id)
            if run.info.experiment_id != self.experiment_id:
                raise BitmojiError(f"run {self.resume_run_id} belongs to another experiment")
            mlflow.start_run(run_id=self.resume_run_id)
        else:
            mlflow.start_run(experiment_id=self.experiment_id, run_name=self.run_name)
        self.run_id = mlflow.active_run().info.run_id
        return self

    def __exit__(self, kind, value, traceback) -> None:
        status = "FINISHED" if kind is None else "KILLED" if kind is KeyboardInterrupt else "FAILED"
        mlflow.end_run(status=status)

    @staticmethod
    def get_run(run_id: str):
        """The run `run_id`, or a clear error if the store has no such run."""
        try:
            return MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException as error:
            raise BitmojiError(f"unknown run id {run_id!r} in {tracking_uri()}") from error

    def log_start(self, config: Any, manifest: dict, lists_dir: Path, device: str, parameters: int) -> None:
        """Params, tags and dataset inputs, once per new run."""
        import torch

        self.model_name = config.model
        digest = manifest.get("digest", "")
        self.val_dataset = _list_dataset(lists_dir, "val", digest)
        if self.resume_run_id:
            return
        mlflow.log_params(config.to_params())
        tags = {
            "model": config.model,
            "torch_version": torch.__version__,
            "cpu_count": str(os.cpu_count()),
            "device": device,
            "python": platform.python_version(),
            "data_digest": digest,
            "parameters": str(parameters),
        }
        commit = _git_commit()
        if commit:
            tags["git_commit"] = commit
        mlflow.set_tags(tags)
        with warnings.catch_warnings():  # MLflow's hint about integer columns in the schema
            warnings.simplefilter("ignore", UserWarning)
            mlflow.log_input(_list_dataset(lists_dir, "train", digest), context="training")
            mlflow.log_input(self.val_dataset, context="validation")

    def log_epoch(self, epoch: int, metrics: dict[str, float], best_checkpoint: Path | None) -> str:
        """The per-epoch metrics at step = epoch. A new best checkpoint is logged first as an
        MLflow logged model, and the epoch's metrics are linked to it, so that
        search_logged_models ranks checkpoints across runs. Returns the best's location."""
        values = {key: value for key, value in metrics.items() if key != "epoch"}
        if best_checkpoint is None:
            mlflow.log_metrics(values, step=epoch)
            return ""
        location = self.log_checkpoint(best_checkpoint)
        model = mlflow.initialize_logged_model(
            name=f"{self.model_name}-best",
            source_run_id=self.run_id,
            model_type=CHECKPOINT_MODEL_TYPE,
            params={"epoch": str(epoch)},
            tags={"model": self.model_name, "step": str(epoch)},
            experiment_id=self.experiment_id,
        )
        MlflowClient().log_model_artifact(model.model_id, str(best_checkpoint))
        mlflow.log_metrics(values, step=epoch, model_id=model.model_id, dataset=self.val_dataset)
        mlflow.finalize_logged_model(model.model_id, "READY")
        return location

    def log_checkpoint(self, path: Path) -> str:
        """Log `path` under checkpoints/ of the run; return where it now lives."""
        mlflow.log_artifact(str(path), CHECKPOINT_DIR)
        return local_path(mlflow.get_artifact_uri(f"{CHECKPOINT_DIR}/{path.name}"))

    def log_figures(self, history: list[dict[str, float]], confusion: np.ndarray) -> None:
        """Learning curves and the best epoch's validation confusion matrix as PNG artifacts."""
        with tempfile.TemporaryDirectory() as folder:
            plots.learning_curves(history, Path(folder) / "learning_curves.png")
            plots.confusion_matrix_plot(confusion, Path(folder) / "confusion_matrix.png")
            mlflow.log_artifacts(folder, "plots")

    def log_summary(self, best: dict[str, float], train_seconds: float, epochs_run: int) -> None:
        """Run-level results, for sorting runs."""
        mlflow.log_metrics(
            {
                "best_val_acc": best["val_acc"],
                "best_val_loss": best["val_loss"],
                "best_epoch": best["epoch"],
                "train_seconds": train_seconds,
                "epochs_run": epochs_run,
            }
        )


def run_exists(run_id: str) -> bool:
    """Whether the store holds run `run_id`."""
    connect()
    try:
        MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def download_run_checkpoint(run_id: str, name: str, folder: Path) -> Path:
    """Download checkpoints/`name` of run `run_id` into `folder`."""
    connect()
    RunTracker.get_run(run_id)
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"{CHECKPOINT_DIR}/{name}", dst_path=str(folder)
            )
        )
    except Exception as error:
        raise BitmojiError(f"run {run_id} has no {CHECKPOINT_DIR}/{name}") from error


@dataclasses.dataclass
class BestCheckpoint:
    """The top-ranked logged checkpoint of an experiment, downloaded."""

    path: Path
    run_id: str
    model_id: str


def best_logged_checkpoint(experiment: str, folder: Path) -> BestCheckpoint:
    """Highest val_acc (ties: lowest val_loss) over every logged checkpoint of the experiment."""
    experiment_id = experiment_id_or_error(experiment)
    models = [
        model
        for model in MlflowClient().search_logged_models(
            [experiment_id],
            filter_string=f"model_type = '{CHECKPOINT_MODEL_TYPE}'",
            order_by=[
                {"field_name": "metrics.val_acc", "ascending": False},
                {"field_name": "metrics.val_loss", "ascending": True},
            ],
        )
        if str(model.status) in ("READY", "LoggedModelStatus.READY")
    ]
    if not models:
        raise BitmojiError(
            f"no runs yet: experiment {experiment!r} has no trained checkpoint (run `bitmoji train`)"
        )
    best = models[0]
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{best.artifact_location}/best.pt", dst_path=str(folder)
    )
    return BestCheckpoint(Path(path), best.source_run_id, best.model_id)


def log_export(
    run_id: str, onnx_path: Path, report_path: Path, champion_path: Path, example_image: Path | None = None
) -> str:
    """Log the ONNX file(s) and the parity report to the source run, register the champion
    file, wrapped as the image model, as a new version of the registered model and move the
    `champion` alias to it."""
    import onnx

    from bitmoji_ml.image_model_registry import log_image_model

    connect()
    client = MlflowClient()
    for path in {onnx_path, champion_path, report_path}:
        client.log_artifact(run_id, str(path), "onnx")
    status = client.get_run(run_id).info.status
    with mlflow.start_run(run_id=run_id):
        mlflow.onnx.log_model(
            onnx.load(str(champion_path)),
            name="onnx-model",
            pip_requirements=["onnxruntime"],
            save_as_external_data=False,
            tags={"file": champion_path.name},
        )
        image_model = log_image_model(onnx_path=champion_path, example_image=example_image)
    client.set_terminated(run_id, status=status)  # reopening must not change how the run ended
    version = mlflow.register_model(image_model.model_uri, paths.REGISTERED_MODEL)
    client.set_registered_model_alias(paths.REGISTERED_MODEL, "champion", version.version)
    return str(version.version)


# --- evaluate, runs and ui ----------------------------------------------------------------

EVALUATION_TAG = "evaluation"  # "true" on the runs `bitmoji evaluate` logs
ONNX_LOGGED_MODEL = "onnx-model"  # the name log_export gives the ONNX logged model
UI_HOST = "127.0.0.1"


@dataclasses.dataclass
class ResolvedModel:
    """An ONNX file to evaluate and what MLflow knows about it."""

    path: Path
    label: str
    uri: str
    model_id: str | None = None
    version: str = ""


def _model_id_from_source(source: str) -> str | None:
    """A registered version's logged model id: MLflow 3 records it as `models:/<id>`."""
    if source.startswith("models:/m-"):
        return source[len("models:/") :].split("/")[0]
    return None


def _download_onnx(artifact_uri: str, folder: Path) -> Path:
    """Download an MLflow model and return the .onnx file inside it."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(folder)))
    found = sorted(local.rglob("*.onnx"))
    if not found:
        raise BitmojiError(f"{artifact_uri} holds no .onnx file")
    return found[0]


def run_onnx(run_id: str, folder: Path) -> ResolvedModel:
    """The ONNX model `export-onnx` logged to run `run_id` (the newest export), downloaded."""
    connect()
    client = MlflowClient()
    run = RunTracker.get_run(run_id)
    logged = [client.get_logged_model(output.model_id) for output in run.outputs.model_outputs]
    onnx_models = sorted(
        (model for model in logged if model.name == ONNX_LOGGED_MODEL),
        key=lambda model: model.creation_timestamp,
    )
    if onnx_models:
        model = onnx_models[-1]
        path = _download_onnx(f"models:/{model.model_id}", folder)
        label = model.tags.get("file", path.name)
        return ResolvedModel(path, label, f"models:/{model.model_id}", model.model_id)
    # An older export may have left only the files under onnx/.
    files = [a.path for a in client.list_artifacts(run_id, "onnx") if a.path.endswith(".onnx")]
    if not files:
        raise BitmojiError(
            f"run {run_id} has no exported ONNX model: run `bitmoji export-onnx --run-id {run_id}` first"
        )
    chosen = sorted(files, key=lambda name: (".int8." in name, name))[0]
    path = Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=chosen, dst_path=str(folder))
    )
    return ResolvedModel(path, path.name, f"runs:/{run_id}/{chosen}")


def champion_model(folder: Path) -> ResolvedModel:
    """The registry's @champion ONNX file, downloaded, with its version and logged model id."""
    connect()
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(paths.REGISTERED_MODEL, "champion")
    except mlflow.exceptions.MlflowException as error:
        raise BitmojiError(
            f"no @champion in the registry ({paths.REGISTERED_MODEL}): run `bitmoji export-onnx` first"
        ) from error
    path = _download_onnx(f"models:/{paths.REGISTERED_MODEL}/{version.version}", folder)
    model_id = getattr(version, "model_id", None) or _model_id_from_source(version.source or "")
    label = path.name
    if model_id:
        try:
            label = client.get_logged_model(model_id).tags.get("file", label)
        except mlflow.exceptions.MlflowException:
            model_id = None  # the version points at a model this store no longer has
    uri = f"models:/{paths.REGISTERED_MODEL}/{version.version}"
    return ResolvedModel(path, label, uri, model_id, str(version.version))


def log_evaluation(
    experiment: str,
    run_name: str,
    metrics: dict[str, float],
    folder: Path,
    tags: dict[str, str],
    model_id: str | None,
    dataset: tuple[list[str], list[int], Path, str],
) -> str:
    """One evaluation run: tags, the labelled set as its input, the evaluated logged model as an
    input too (when known), metrics linked to that model and dataset, and every file of `folder`
    as artifacts. Returns the run id."""
    from mlflow.entities import LoggedModelInput

    experiment_id = connect(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags({**tags, EVALUATION_TAG: "true"})
        evaluation_set = _labelled_dataset(*dataset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            mlflow.log_input(evaluation_set, context="evaluation")
        if model_id:
            MlflowClient().log_inputs(run.info.run_id, models=[LoggedModelInput(model_id)])
        mlflow.log_metrics(metrics, model_id=model_id, dataset=evaluation_set)
        mlflow.log_artifacts(str(folder))
    return run.info.run_id


def experiment_runs(experiment: str) -> list[dict[str, Any]]:
    """Every run of `experiment` as plain values: id, name, status, start time (ms), params,
    metrics (latest values) and tags."""
    experiment_id = experiment_id_or_error(experiment)
    client = MlflowClient()
    found, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        found += page
        token = page.token
        if not token:
            break
    return [
        {
            "run_id": run.info.run_id,
            "name": run.info.run_name or "",
            "status": run.info.status,
            "start_time": run.info.start_time or 0,
            "params": dict(run.data.params),
            "metrics": dict(run.data.metrics),
            "tags": {key: value for key, value in run.data.tags.items() if not key.startswith("mlflow.")},
        }
        for run in found
    ]


def ui_command(port: int, uri: str | None = None) -> list[str]:
    """The `mlflow ui` command line for the project's store, on loopback only."""
    import sys

    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        raise BitmojiError(f"the tracking store {uri} is already a server: open it in a browser")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    root = _artifact_root(uri)
    if root:  # experiments made in the UI then keep artifacts where `train` puts them
        command += ["--default-artifact-root", root]
    # One worker: a single local user, and it starts much faster than the default four.
    return command + ["--host", UI_HOST, "--port", str(port), "--workers", "1"]


def ui_urls(port: int, experiment: str) -> tuple[str, str | None]:
    """The UI's address and, when the experiment exists, its page."""
    connect()
    base = f"http://{UI_HOST}:{port}"
    found = MlflowClient().get_experiment_by_name(experiment)
    return base, (f"{base}/#/experiments/{found.experiment_id}" if found else None)


def check_port_free(port: int) -> None:
    """Fail with advice, before starting anything, when the loopback port is taken."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers do: connections closed a moment ago (TIME_WAIT) do not block the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((UI_HOST, port))
        except OSError as error:
            raise BitmojiError(f"port {port} on {UI_HOST} is in use: pass --port with a free one") from error


def stop_process_group(process: subprocess.Popen, timeout: float = 15) -> None:
    """Stop a server started by `start_server` and its workers: SIGTERM, then SIGKILL."""
    import contextlib
    import signal

    def send(signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
            os.killpg(process.pid, signal_number)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()


def start_server(command: list[str], **popen_options: Any) -> subprocess.Popen:
    """Start an MLflow server in its own process group, so that stopping it stops its workers."""
    return subprocess.Popen(command, start_new_session=True, **popen_options)


def serve_ui(command: list[str]) -> int | None:
    """Run the UI in the foreground until it exits (its exit code) or Ctrl-C (None)."""
    process = start_server(command)
    try:
        return process.wait()
    except KeyboardInterrupt:  # only we get it: the server has its own session
        stop_process_group(process)
        return None
