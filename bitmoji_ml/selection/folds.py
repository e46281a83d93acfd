"""Stratified k-fold assignment over every labelled image (the train and val lists together)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitmoji_ml.data.lists import LIST_FILES, read_list
from bitmoji_ml.errors import BitmojiError


def labelled_entries(lists_dir: Path) -> list[tuple[Path, int]]:
    """Every labelled image of `prepare`'s lists (train, then val), each once."""
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
