"""The training data: the train and val lists decoded once into memory."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from bitmoji_ml.data.cache import load_list
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.data.lists import LIST_FILES
from bitmoji_ml.paths import CACHE_DIR


@dataclasses.dataclass
class TrainData:
    """Decoded images (uint8 NHWC) and labels to train on, and to validate on (None: no
    validation, e.g. `--all-labelled`); `train_targets`, when set, are the class probabilities
    the loss trains towards instead of the labels (a teacher's: training/teacher.py)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray | None
    val_labels: np.ndarray | None
    manifest: dict[str, Any]
    train_targets: np.ndarray | None = None  # (N, classes) float32


def load_data(
    lists_dir: Path,
    manifest: dict[str, Any],
    preprocess: Preprocess,
    disk_cache: bool = False,
    all_labelled: bool = False,
) -> TrainData:
    """Decode the train and val lists once into memory (and into data/cache/ if asked);
    `all_labelled` trains on both lists and validates on none."""
    cache = CACHE_DIR if disk_cache else None
    train_images, train_labels, _ = load_list(Path(lists_dir) / LIST_FILES["train"], preprocess, cache)
    val_images, val_labels, _ = load_list(Path(lists_dir) / LIST_FILES["val"], preprocess, cache)
    if all_labelled:
        images, labels = (
            np.concatenate([train_images, val_images]),
            np.concatenate([train_labels, val_labels]),
        )
        return TrainData(images, labels, None, None, manifest)
    return TrainData(train_images, train_labels, val_images, val_labels, manifest)
