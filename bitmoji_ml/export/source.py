"""Which checkpoint `export-onnx` exports: a file, a run's best, or the experiment's best logged
model on the current validation list; and the content hash that identifies it in the registry."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitmoji_ml import paths
from bitmoji_ml.checkpoints import read_checkpoint
from bitmoji_ml.data.lists import LIST_FILES, read_list
from bitmoji_ml.files import file_sha256

if TYPE_CHECKING:
    from bitmoji_ml.tracking.store import Store


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


def source_from_file(path: Path, run_id: str | None, description: str) -> ExportSource:
    payload = read_checkpoint(path)
    return ExportSource(payload, run_id or payload.get("mlflow_run_id"), description, file_sha256(path))


def load_source(
    checkpoint: Path | None,
    run_id: str | None,
    experiment: str,
    download_dir: Path,
    *,
    store: Store | None = None,
    lists_dir: Path | None = None,
) -> ExportSource:
    """The checkpoint to export: a file, a run's best, or the best logged model of the
    experiment among those scored on the validation list in `lists_dir`."""
    if checkpoint is not None:
        return source_from_file(Path(checkpoint), None, f"checkpoint {checkpoint}")
    from bitmoji_ml.tracking.names import BEST_CHECKPOINT
    from bitmoji_ml.tracking.ranking import best_logged_checkpoint
    from bitmoji_ml.tracking.runs import download_run_checkpoint

    if run_id is not None:
        path = download_run_checkpoint(store, run_id=run_id, name=BEST_CHECKPOINT, folder=download_dir)
        return source_from_file(path, run_id, f"run {run_id} best checkpoint")
    best = best_logged_checkpoint(
        store, experiment=experiment, lists_dir=Path(lists_dir or paths.LISTS_DIR), folder=download_dir
    )
    return source_from_file(best.path, best.run_id, f"best logged model {best.model_id}")


def first_validation_image(lists_dir: Path | None) -> Path | None:
    """The first face of the validation list (the registered model's input example), if any."""
    path = Path(lists_dir or "") / LIST_FILES["val"]
    entries = read_list(path) if lists_dir and path.is_file() else []
    return entries[0][0] if entries else None
