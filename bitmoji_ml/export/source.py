"""Which checkpoint `export-onnx` exports: a file, a run's best, or the experiment's best logged
model on the current validation list; and the content hash that identifies it in the registry."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitmoji_ml import paths
from bitmoji_ml.data.lists import LIST_FILES, read_list
from bitmoji_ml.files import file_sha256
from bitmoji_ml.tracking.mlflow_process import on_store

if TYPE_CHECKING:
    from bitmoji_ml.tracking.mlflow_process import MlflowProcess
    from bitmoji_ml.tracking.store import Store

# The checkpoint entries that hold tensors (checkpoints.py's weights and training state): torch
# is needed to unpickle them, and registration never reads them.
TENSOR_ENTRIES = ("state_dict", "train_state")


@dataclasses.dataclass
class ExportSource:
    """The checkpoint being exported and where it came from."""

    payload: dict[str, Any]
    run_id: str | None
    description: str
    sha256: str = ""  # of the checkpoint file: the same checkpoint exported twice is one model

    @property
    def val_acc(self) -> float | None:
        """The checkpoint's validation accuracy; None for a run without validation."""
        value = self.payload.get("metrics", {}).get("val_acc")
        return None if value is None or math.isnan(value) else float(value)

    def without_tensors(self) -> ExportSource:
        """This source without its weights: what registration reads, sent to the MLflow process,
        which never imports torch."""
        plain = {key: value for key, value in self.payload.items() if key not in TENSOR_ENTRIES}
        return dataclasses.replace(self, payload=plain)


def source_from_file(path: Path, run_id: str | None, description: str) -> ExportSource:
    from bitmoji_ml.checkpoints import read_checkpoint  # torch: not where an ExportSource is unpickled

    payload = read_checkpoint(path)
    return ExportSource(payload, run_id or payload.get("mlflow_run_id"), description, file_sha256(path))


def load_source(
    checkpoint: Path | None,
    run_id: str | None,
    experiment: str,
    download_dir: Path,
    *,
    store: Store | MlflowProcess | None = None,
    lists_dir: Path | None = None,
) -> ExportSource:
    """The checkpoint to export: a file, a run's best, or the best logged model of the
    experiment among those scored on the validation list in `lists_dir` (found by `store`)."""
    if checkpoint is not None:
        return source_from_file(Path(checkpoint), None, f"checkpoint {checkpoint}")
    path, found_run_id, description = on_store(
        store,
        "bitmoji_ml.tracking.ranking:export_checkpoint",
        run_id=run_id,
        experiment=experiment,
        lists_dir=Path(lists_dir or paths.LISTS_DIR),
        folder=download_dir,
    )
    return source_from_file(path, found_run_id, description)


def first_validation_image(lists_dir: Path | None) -> Path | None:
    """The first face of the validation list (the registered model's input example), if any."""
    path = Path(lists_dir or "") / LIST_FILES["val"]
    entries = read_list(path) if lists_dir and path.is_file() else []
    return entries[0][0] if entries else None
