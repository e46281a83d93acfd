"""Every labelled image (the train and val lists together), decoded once, its stratified k-fold
assignment, and one fold's training data."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from bitmoji_ml.data.cache import load_images
from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.lists import LIST_FILES, manifest_classes, read_list, read_manifest
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.paths import CACHE_DIR
from bitmoji_ml.recipe import Recipe
from bitmoji_ml.training.data import TrainData
from bitmoji_ml.training.settings import preprocess_for


@dataclasses.dataclass
class LabelledImages:
    """Every labelled image of the lists, decoded once for all folds."""

    paths: list[Path]
    labels: np.ndarray  # class indices of `classes`
    images: np.ndarray  # uint8 NHWC
    manifest: dict[str, Any]
    lists_dir: Path

    @property
    def classes(self) -> Classes:
        return manifest_classes(self.manifest)


def labelled_entries(lists_dir: Path) -> list[tuple[Path, int]]:
    """Every labelled image of `prepare`'s lists (train, then val), each once (`read_list`
    refuses a class index the manifest beside them does not name)."""
    entries = read_list(Path(lists_dir) / LIST_FILES["train"]) + read_list(
        Path(lists_dir) / LIST_FILES["val"]
    )
    seen: set[Path] = set()
    unique = []
    for path, label in entries:
        if path not in seen:
            seen.add(path)
            unique.append((path, label))
    return unique


def decode_labelled(*, lists_dir: Path, config: Recipe) -> LabelledImages:
    """The train and val lists' images, decoded once at the config's input size."""
    manifest = read_manifest(lists_dir)
    entries = labelled_entries(lists_dir)
    paths = [path for path, _ in entries]
    labels = np.array([label for _, label in entries], dtype=np.int64)
    images = load_images(paths, preprocess_for(config), CACHE_DIR if config.disk_cache else None)
    return LabelledImages(paths, labels, images, manifest, Path(lists_dir))


def stratified_folds(labels: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each image: seeded, class balance kept in every fold."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    if folds < 2:
        raise BitmojiError(f"--folds must be at least 2, got {folds}")
    smallest = int(np.bincount(labels, minlength=2).min())
    if smallest < folds:
        raise BitmojiError(
            f"--folds {folds} needs at least {folds} images of each class; the smallest class has {smallest}"
        )
    assignment = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        assignment[held_out] = fold
    return assignment


def fold_data(labelled: LabelledImages, assignment: np.ndarray, fold: int, digest: str) -> TrainData:
    """Train on every fold but `fold` (0-based), validate on `fold`; `digest` names the
    training subset (a fold's checkpoints cannot be resumed on the full lists)."""
    held_out = assignment == fold
    return TrainData(
        labelled.images[~held_out],
        labelled.labels[~held_out],
        labelled.images[held_out],
        labelled.labels[held_out],
        {**labelled.manifest, "digest": digest},
    )


def fold_datasets(labelled: LabelledImages, assignment: np.ndarray, fold: int, folds: int):
    """The fold's training and held-out images as MLflow datasets (digests of their content)."""
    from bitmoji_ml.tracking.datasets import RunDatasets, subset_dataset

    def subset(mask: np.ndarray, part: str):
        return subset_dataset(
            split=f"cv{folds}-fold{fold + 1}-{part}",
            source=labelled.lists_dir,
            images=[path.name for path, keep in zip(labelled.paths, mask, strict=True) if keep],
            labels=labelled.labels[mask].tolist(),
        )

    return RunDatasets([subset(assignment != fold, "train")], subset(assignment == fold, "heldout"))
