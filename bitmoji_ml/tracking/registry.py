"""Which model: the best logged checkpoint (ranked on the current validation list), the ONNX
logged model and registered version `export-onnx` adds, the `@champion` alias, and the ONNX
model `evaluate` scores."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException

from bitmoji_ml import paths
from bitmoji_ml.data.lists import LIST_FILES, read_manifest
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.tracking.datasets import list_digest
from bitmoji_ml.tracking.names import (
    BEST_CHECKPOINT,
    BEST_ON_VAL,
    CHAMPION_ALIAS,
    CHECKPOINT_MODEL_TYPE,
    EXPORT_DIR,
    IMAGE_LOGGED_MODEL,
    ONNX_LOGGED_MODEL,
    SELECTION_TAG,
    dataset_name,
)
from bitmoji_ml.tracking.store import Store

if TYPE_CHECKING:
    from mlflow.models import Model

logger = logging.getLogger(__name__)
PAGE = 100


@dataclasses.dataclass(frozen=True)
class BestCheckpoint:
    """The top-ranked logged checkpoint of an experiment, downloaded."""

    path: Path
    run_id: str
    model_id: str
    val_digest: str  # the validation list it was ranked on


def _ranked(model: LoggedModel) -> bool:
    """Whether a checkpoint takes part in the val_acc ranking: READY, and chosen as its run's
    best epoch on val_acc (not the last epoch of a run without selection: `--all-labelled`
    runs have no val_acc at all, `cv` folds have one on their held-out fold only)."""
    selected = model.tags.get(SELECTION_TAG, BEST_ON_VAL) == BEST_ON_VAL  # untagged: older runs
    return model.status == LoggedModelStatus.READY and selected


def _first_ready(
    store: Store, *, experiment_id: str, datasets: list[dict] | None = None, ranked: bool = True
) -> LoggedModel | None:
    """The best READY checkpoint: highest val_acc, ties to lower val_loss, each counted only
    on `datasets` when given (and only models with metrics on them); with `ranked`, only
    checkpoints selected on val_acc (see `_ranked`)."""
    on = datasets[0] if datasets else {}
    order = [
        {"field_name": "metrics.val_acc", "ascending": False, **on},
        {"field_name": "metrics.val_loss", "ascending": True, **on},
    ]
    token = None
    while True:
        page = store.client.search_logged_models(
            [experiment_id],
            filter_string=f"model_type = '{CHECKPOINT_MODEL_TYPE}'",
            datasets=datasets,
            max_results=PAGE,
            order_by=order,
            page_token=token,
        )
        ready = [
            model for model in page if (_ranked(model) if ranked else model.status == LoggedModelStatus.READY)
        ]
        if ready:
            return ready[0]
        token = page.token
        if not token:
            return None


def _current_val_digest(lists_dir: Path) -> str:
    try:
        return list_digest(manifest=read_manifest(lists_dir), split="val")
    except BitmojiError as error:
        raise BitmojiError(f"{error} (or pass --run-id to export one run's best checkpoint)") from error


def best_logged_checkpoint(store: Store, *, experiment: str, lists_dir: Path, folder: Path) -> BestCheckpoint:
    """Among the experiment's logged checkpoints scored on the current validation list (its
    digest in `lists_dir`'s manifest), the highest val_acc (ties: lowest val_loss), downloaded
    into `folder`. Scores on other validation lists are not comparable, so they do not count."""
    experiment_id = store.experiment_id(experiment, create=False)
    if _first_ready(store, experiment_id=experiment_id) is None:
        if _first_ready(store, experiment_id=experiment_id, ranked=False) is not None:
            raise BitmojiError(
                f"experiment {experiment!r} has checkpoints only from runs without validation "
                "selection (`train --all-labelled`, `cv` folds), which have no val_acc to rank them "
                "by: pass --run-id"
            )
        raise BitmojiError(
            f"no runs yet: experiment {experiment!r} has no trained checkpoint (run `bitmoji train`)"
        )
    val_list = Path(lists_dir) / LIST_FILES["val"]
    digest = _current_val_digest(lists_dir)
    on_val = [{"dataset_name": dataset_name("val"), "dataset_digest": digest}]
    best = _first_ready(store, experiment_id=experiment_id, datasets=on_val)
    if best is None:
        raise BitmojiError(
            f"no checkpoint of experiment {experiment!r} was scored on the current validation list "
            f"{val_list} (digest {digest}): the lists changed since those runs. Train on the current "
            "lists (`bitmoji train`) or pass --run-id."
        )
    logger.info(
        f"best checkpoint among those scored on {val_list} (digest {digest}): "
        f"run {best.source_run_id}, step {best.tags.get('step', '?')}"
    )
    path = store.download(artifact_uri=f"{best.artifact_location}/{BEST_CHECKPOINT}", folder=folder)
    return BestCheckpoint(path, best.source_run_id, best.model_id, digest)


# --- export: logged model, registered version, champion --------------------------------------


@dataclasses.dataclass(frozen=True)
class Registration:
    """What `log_export` added: the ONNX logged model and the registered version (@champion)."""

    model_id: str
    version: str


def _log_model_folder(
    store: Store, *, run_id: str, name: str, path: Path, save: Callable[[Path, Model], None]
) -> str:
    """A logged model named `name`, an output of `run_id`, whose files `save(folder, model)`
    writes; returns its id. Client calls only: the source run is not reopened."""
    from mlflow.models import Model

    client = store.client
    run = store.get_run(run_id)
    model = client.create_logged_model(
        run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        tags={"file": path.name},
        params=dict(run.data.params),
    )
    try:
        with tempfile.TemporaryDirectory(prefix="bitmoji-logged-model-") as folder:
            local = Path(folder) / "model"
            described = Model(
                artifact_path=model.artifact_location,
                run_id=run_id,
                model_uuid=model.model_id,
                model_id=model.model_id,
            )
            save(local, described)
            client.log_model_artifacts(model.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model.model_id


def _save_onnx_model(path: Path) -> Callable[[Path, Model], None]:
    """Writes `path` as an MLflow ONNX-flavor model folder."""

    def save(folder: Path, described: Model) -> None:
        import mlflow.onnx
        import onnx

        mlflow.onnx.save_model(
            onnx.load(str(path)),
            str(folder),
            mlflow_model=described,
            pip_requirements=["onnxruntime"],
            save_as_external_data=False,
        )

    return save


def _save_image_model(path: Path, example_image: Path | None) -> Callable[[Path, Model], None]:
    """Writes `path` wrapped as the image pyfunc (bytes in, probabilities out)."""

    def save(folder: Path, described: Model) -> None:
        from bitmoji_ml.serving.image_model_registry import save_image_model

        save_image_model(folder, mlflow_model=described, onnx_path=path, example_image=example_image)

    return save


def register_champion(store: Store, *, model_id: str, run_id: str) -> str:
    """A new version of the registered model from logged model `model_id`, with the
    `@champion` alias moved to it; returns the version."""
    client, name = store.client, paths.REGISTERED_MODEL
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    # The source must be models:/<id> so that the version names its logged model, and MLflow's
    # SQL registry resolves such a source with `MlflowClient()` on the process-wide tracking URI,
    # not this client's (see the TODO in its create_model_version): hence the scoped default.
    with store.process_default():
        version = client.create_model_version(name, f"models:/{model_id}", run_id=run_id, model_id=model_id)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
    return str(version.version)


def log_export(
    store: Store,
    *,
    run_id: str,
    onnx_path: Path,
    report_path: Path,
    champion_path: Path,
    example_image: Path | None = None,
) -> Registration:
    """Log the ONNX file(s) and the parity report under onnx/ of the source run, the champion
    file as an ONNX logged model (for `bitmoji predict --model` and evaluate) and as the image
    model, and register the image model as `@champion`."""
    for path in dict.fromkeys([onnx_path, champion_path, report_path]):
        store.client.log_artifact(run_id, str(path), EXPORT_DIR)
    _log_model_folder(
        store, run_id=run_id, name=ONNX_LOGGED_MODEL, path=champion_path, save=_save_onnx_model(champion_path)
    )
    image_model_id = _log_model_folder(
        store,
        run_id=run_id,
        name=IMAGE_LOGGED_MODEL,
        path=champion_path,
        save=_save_image_model(champion_path, example_image),
    )
    return Registration(image_model_id, register_champion(store, model_id=image_model_id, run_id=run_id))


# --- the model `evaluate` scores -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
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


def _download_onnx(store: Store, *, artifact_uri: str, folder: Path) -> Path:
    """Download an MLflow model and return the .onnx file inside it."""
    found = sorted(store.download(artifact_uri=artifact_uri, folder=folder).rglob("*.onnx"))
    if not found:
        raise BitmojiError(f"{artifact_uri} holds no .onnx file")
    return found[0]


def _exported_files(store: Store, *, run_id: str, folder: Path) -> ResolvedModel:
    """An older export may have left only the files under onnx/: the fp32 one."""
    listed = store.client.list_artifacts(run_id, EXPORT_DIR)
    files = [artifact.path for artifact in listed if artifact.path.endswith(".onnx")]
    if not files:
        raise BitmojiError(
            f"run {run_id} has no exported ONNX model: run `bitmoji export-onnx --run-id {run_id}` first"
        )
    chosen = sorted(files, key=lambda name: (".int8." in name, name))[0]
    path = Path(store.client.download_artifacts(run_id, chosen, str(folder)))
    return ResolvedModel(path, path.name, f"runs:/{run_id}/{chosen}")


def run_onnx(store: Store, *, run_id: str, folder: Path) -> ResolvedModel:
    """The ONNX model `export-onnx` logged to run `run_id` (the newest export), downloaded."""
    run = store.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    logged = [store.client.get_logged_model(output.model_id) for output in outputs]
    exports = sorted(
        (m for m in logged if m.name == ONNX_LOGGED_MODEL and m.status == LoggedModelStatus.READY),
        key=lambda model: model.creation_timestamp,
    )
    if not exports:
        return _exported_files(store, run_id=run_id, folder=folder)
    model = exports[-1]
    uri = f"models:/{model.model_id}"
    path = _download_onnx(store, artifact_uri=uri, folder=folder)
    return ResolvedModel(path, model.tags.get("file", path.name), uri, model.model_id)


def champion_model(store: Store, *, folder: Path) -> ResolvedModel:
    """The registry's @champion ONNX file, downloaded, with its version and logged model id."""
    client = store.client
    try:
        version = client.get_model_version_by_alias(paths.REGISTERED_MODEL, CHAMPION_ALIAS)
    except MlflowException as error:
        raise BitmojiError(
            f"no @{CHAMPION_ALIAS} in the registry ({paths.REGISTERED_MODEL}): run `bitmoji export-onnx` first"
        ) from error
    uri = f"models:/{paths.REGISTERED_MODEL}/{version.version}"
    path = _download_onnx(store, artifact_uri=uri, folder=folder)
    model_id = getattr(version, "model_id", None) or _model_id_from_source(version.source or "")
    label = path.name
    if model_id:
        try:
            label = client.get_logged_model(model_id).tags.get("file", label)
        except MlflowException:
            model_id = None  # the version points at a model this store no longer has
    return ResolvedModel(path, label, uri, model_id, str(version.version))
