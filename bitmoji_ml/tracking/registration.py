"""What `export-onnx` logs: the exported files under onnx/ of the source run, the ONNX and image
logged models, a registered version tagged with the checkpoint it came from (so exporting the
same checkpoint again finds it instead of adding a version), and the `@champion` alias. The
registered model is named by the caller: `export-onnx` names it after the experiment."""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from bitmoji_ml.files import file_sha256
from bitmoji_ml.tracking.names import CHAMPION_ALIAS, EXPORT_DIR, IMAGE_LOGGED_MODEL, ONNX_LOGGED_MODEL
from bitmoji_ml.tracking.records import (
    CHECKPOINT_SHA256_TAG,
    DATA_DIGEST_TAG,
    FILE_SHA256_TAG,
    FORMAT_TAG,
    VAL_ACC_TAG,
    VersionSummary,
)
from bitmoji_ml.tracking.runs import now_ms
from bitmoji_ml.tracking.store import Store

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import Model

EXPORTED_VAL_ACC = "exported_val_acc"  # metric of the image logged model: its file's val_acc


@dataclasses.dataclass(frozen=True)
class Registration:
    """What `log_export` added: the image logged model and its registered version."""

    model_id: str
    version: str


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else value


def _summary(store: Store, version: ModelVersion) -> VersionSummary:
    """A version's summary from its tags; a version registered before they existed falls back
    to its run's best_val_acc and data_digest (what its fp32 file was chosen on)."""
    tags = version.tags or {}
    if VAL_ACC_TAG in tags:
        return VersionSummary(
            str(version.version),
            version.run_id or "",
            _float(tags[VAL_ACC_TAG]),
            tags.get(DATA_DIGEST_TAG, ""),
            tags.get(FORMAT_TAG, ""),
            tags.get(CHECKPOINT_SHA256_TAG, ""),
        )
    try:
        run = store.get_run(version.run_id) if version.run_id else None
    except Exception:  # noqa: BLE001 - a run deleted since, or another store's: nothing to compare
        run = None
    metric = run.data.metrics.get("best_val_acc") if run else None
    digest = run.data.tags.get("data_digest", "") if run else ""
    return VersionSummary(str(version.version), version.run_id or "", _float(str(metric)), digest)


def run_experiment(store: Store, run_id: str) -> str:
    """The name of the experiment run `run_id` is in."""
    return store.client.get_experiment(store.get_run(run_id).info.experiment_id).name


def champion_version(store: Store, *, registered_model: str) -> VersionSummary | None:
    """The version `registered_model@champion` points at, or None when there is none yet."""
    try:
        version = store.client.get_model_version_by_alias(registered_model, CHAMPION_ALIAS)
    except MlflowException:
        return None
    return _summary(store, version)


def find_version(
    store: Store, *, registered_model: str, checkpoint_sha256: str, file_format: str
) -> VersionSummary | None:
    """The version of `registered_model` registered earlier from the same checkpoint file and
    format, if any."""
    for version in store.client.search_model_versions(f"name = '{registered_model}'"):
        tags = version.tags or {}
        if tags.get(CHECKPOINT_SHA256_TAG) == checkpoint_sha256 and tags.get(FORMAT_TAG) == file_format:
            return _summary(store, version)
    return None


def set_champion(store: Store, *, registered_model: str, version: str) -> None:
    """Point `registered_model@champion` at `version`."""
    store.client.set_registered_model_alias(registered_model, CHAMPION_ALIAS, version)


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
        tags={"file": path.name, FILE_SHA256_TAG: file_sha256(path)},
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


def register_version(
    store: Store, *, registered_model: str, model_id: str, run_id: str, tags: dict[str, str]
) -> str:
    """A new version of `registered_model` (made if new) from logged model `model_id`, tagged
    with `tags` (the alias is not moved here), and linked both ways as `mlflow.register_model`
    links it; returns the version."""
    client, name = store.client, registered_model
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    # The source must be models:/<id> so that the version names its logged model, and MLflow's
    # SQL registry resolves such a source with `MlflowClient()` on the process-wide tracking URI,
    # not this client's (see the TODO in its create_model_version): hence the scoped default.
    with store.process_default():
        version = client.create_model_version(
            name, f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id
        )
    link_version(store, registered_model=name, model_id=model_id, version=str(version.version))
    return str(version.version)


def link_version(store: Store, *, registered_model: str, model_id: str, version: str) -> None:
    """Record `registered_model` `version` on its logged model (the `mlflow.modelVersions` tag, a JSON list, which
    `mlflow.register_model` writes and the UI reads): its page then shows the registered
    version instead of "Not registered" and a "Register model" button."""
    model = store.client.get_logged_model(model_id)
    versions = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    entry = {"name": registered_model, "version": version}
    if entry not in versions:
        versions.append(entry)
        store.client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(versions)})


def log_model_metrics(store: Store, *, run_id: str, model_id: str, metrics: dict[str, float]) -> None:
    """`metrics` attached to logged model `model_id` (through its source run `run_id`, the only
    way MLflow logs them), so they show on the model's page and in the Models tab."""
    timestamp = now_ms()
    store.client.log_batch(
        run_id,
        metrics=[
            Metric(key, float(value), timestamp, 0, model_id=model_id) for key, value in metrics.items()
        ],
    )


def log_export(
    store: Store,
    *,
    registered_model: str,
    run_id: str,
    onnx_path: Path,
    report_path: Path,
    champion_path: Path,
    tags: dict[str, str],
    example_image: Path | None = None,
    val_acc: float | None = None,
) -> Registration:
    """Log the ONNX file(s) and the parity report under onnx/ of the source run, the champion
    file as an ONNX logged model (for `bitmoji predict --model` and evaluate) and as the image
    model (with the champion file's `val_acc` as its `exported_val_acc`: a name of its own, as
    the metric is logged through the training run, whose val_acc history it must not join),
    and register the image model as a new version of `registered_model` tagged with `tags`."""
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
    if val_acc is not None:
        metrics = {EXPORTED_VAL_ACC: val_acc}
        log_model_metrics(store, run_id=run_id, model_id=image_model_id, metrics=metrics)
    version = register_version(
        store, registered_model=registered_model, model_id=image_model_id, run_id=run_id, tags=tags
    )
    return Registration(image_model_id, version)
