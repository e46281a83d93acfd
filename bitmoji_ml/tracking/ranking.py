"""Which checkpoint `export-onnx` takes by default: the experiment's best logged checkpoint,
ranked on val_acc among those scored on the current validation list."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from mlflow.entities import LoggedModel, LoggedModelStatus

from bitmoji_ml.data.lists import LIST_FILES, read_manifest
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.tracking.datasets import list_digest
from bitmoji_ml.tracking.names import (
    BEST_CHECKPOINT,
    BEST_ON_VAL,
    CHECKPOINT_MODEL_TYPE,
    SELECTION_TAG,
    dataset_name,
)
from bitmoji_ml.tracking.store import Store

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


def export_checkpoint(
    store: Store, *, run_id: str | None, experiment: str, lists_dir: Path, folder: Path
) -> tuple[Path, str, str]:
    """The checkpoint `export-onnx` takes from the store, downloaded into `folder`: run
    `run_id`'s best, else the experiment's best logged checkpoint; (path, run id, description)."""
    from bitmoji_ml.tracking.runs import download_run_checkpoint

    if run_id is not None:
        path = download_run_checkpoint(store, run_id=run_id, name=BEST_CHECKPOINT, folder=folder)
        return path, run_id, f"run {run_id} best checkpoint"
    best = best_logged_checkpoint(store, experiment=experiment, lists_dir=lists_dir, folder=folder)
    return best.path, best.run_id, f"best logged model {best.model_id}"
