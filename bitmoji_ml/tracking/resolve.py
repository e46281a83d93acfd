"""The ONNX model `bitmoji evaluate` scores: the experiment's registered `@champion`, or the
export logged to a run, downloaded with what MLflow knows about it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import file_sha256
from bitmoji_ml.tracking.names import CHAMPION_ALIAS, EXPORT_DIR, IMAGE_LOGGED_MODEL, ONNX_LOGGED_MODEL
from bitmoji_ml.tracking.records import FILE_SHA256_TAG, ResolvedModel
from bitmoji_ml.tracking.store import Store


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


def champion_model(store: Store, *, registered_model: str, folder: Path) -> ResolvedModel:
    """`registered_model@champion`'s ONNX file, downloaded, with its version and logged model id."""
    client = store.client
    try:
        version = client.get_model_version_by_alias(registered_model, CHAMPION_ALIAS)
    except MlflowException as error:
        raise BitmojiError(
            f"no {registered_model}@{CHAMPION_ALIAS} in the registry: run "
            f"`bitmoji export-onnx --experiment {registered_model}` first"
        ) from error
    uri = f"models:/{registered_model}/{version.version}"
    path = _download_onnx(store, artifact_uri=uri, folder=folder)
    model_id = getattr(version, "model_id", None) or _model_id_from_source(version.source or "")
    label = path.name
    if model_id:
        try:
            label = client.get_logged_model(model_id).tags.get("file", label)
        except MlflowException:
            model_id = None  # the version points at a model this store no longer has
    return ResolvedModel(path, label, uri, model_id, str(version.version))


def local_onnx(store: Store, *, path: Path, run_id: str) -> ResolvedModel:
    """An ONNX file given by path, linked to the logged model `export-onnx` made of the same
    file (same sha256) in its source run `run_id` when there is one: the registered image
    model first, else the ONNX model. A file no export logged stays a plain path."""
    resolved = ResolvedModel(path, path.name, str(path.resolve()))
    if not run_id or not store.run_exists(run_id):
        return resolved
    run, digest = store.get_run(run_id), file_sha256(path)
    outputs = run.outputs.model_outputs if run.outputs else []
    same = [
        model
        for model in (store.client.get_logged_model(output.model_id) for output in outputs)
        if model.status == LoggedModelStatus.READY and model.tags.get(FILE_SHA256_TAG) == digest
    ]
    preference = {IMAGE_LOGGED_MODEL: 0, ONNX_LOGGED_MODEL: 1}
    same.sort(key=lambda model: (preference.get(model.name, 2), -model.creation_timestamp))
    if not same:
        return resolved
    return dataclasses.replace(resolved, model_id=same[0].model_id)
