"""The training data: the train and val lists decoded once into memory, with the classes their
labels index (the manifest's `classes`; a manifest without them is Bitmoji's)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from bitmoji_ml.data.cache import load_images
from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.data.lists import LIST_FILES, manifest_classes, read_list
from bitmoji_ml.paths import CACHE_DIR


@dataclasses.dataclass
class TrainData:
    """Decoded images (uint8 NHWC) and labels (class indices) to train on, and to validate on
    (None: no validation, e.g. `--all-labelled`); `train_targets`, when set, are the class
    probabilities the loss trains towards instead of the labels (a teacher's: training/teacher.py)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray | None
    val_labels: np.ndarray | None
    manifest: dict[str, Any]
    train_targets: np.ndarray | None = None  # (N, classes) float32

    @property
    def classes(self) -> Classes:
        return manifest_classes(self.manifest)


def decode_labelled_list(
    entries: list[tuple[Path, int]], preprocess: Preprocess, cache: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """A checked list's entries decoded: (images, labels as int64)."""
    labels = np.array([label for _, label in entries], dtype=np.int64)
    return load_images([image for image, _ in entries], preprocess, cache), labels


def load_data(
    lists_dir: Path,
    manifest: dict[str, Any],
    preprocess: Preprocess,
    disk_cache: bool = False,
    all_labelled: bool = False,
) -> TrainData:
    """Decode the train and val lists once into memory (and into data/cache/ if asked), both
    read first (`read_list` refuses a class index the manifest does not name, before any
    decoding); `all_labelled` trains on both lists and validates on none."""
    cache = CACHE_DIR if disk_cache else None
    manifest_classes(manifest)  # a malformed classes entry fails here, before any decoding
    train, val = (read_list(Path(lists_dir) / LIST_FILES[name]) for name in ("train", "val"))
    train_images, train_labels = decode_labelled_list(train, preprocess, cache)
    val_images, val_labels = decode_labelled_list(val, preprocess, cache)
    if all_labelled:
        images, labels = (
            np.concatenate([train_images, val_images]),
            np.concatenate([train_labels, val_labels]),
        )
        return TrainData(images, labels, None, None, manifest)
    return TrainData(train_images, train_labels, val_images, val_labels, manifest)
