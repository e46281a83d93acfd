"""Out-of-fold (OOF) predictions of a cross-validation: one row per labelled image, with its
true class, the probability of each class from the fold model that did not train on it, and
its fold. `bitmoji cv` writes them as oof_predictions.csv; `audit` and users read that file.

The file's columns are `image,label,<classes.prob_columns>,fold`, `label` being the class index
of the lists. For Bitmoji they are the round-1 columns (`image,label,prob_male,fold`, label 1
male / 0 female, P(female) = 1 - prob_male); other classes have one `prob_<name>` column per
class, in the classes' order, so the file names its own classes."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np

from bitmoji_ml.data.classes import BITMOJI, KAGGLE_PROB_COLUMN, PROB_PREFIX, Classes
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import atomic_path

IMAGE_COLUMN, LABEL_COLUMN, FOLD_COLUMN = "image", "label", "fold"
DECIMALS = 6  # enough for a log loss and a ranking; the file stays readable


@dataclasses.dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions: `probabilities[i, k]` is P(classes.names[k]) for images[i]."""

    images: list[str]
    labels: np.ndarray  # class indices (Bitmoji: 1 male / 0 female)
    probabilities: np.ndarray  # (images, classes)
    folds: np.ndarray  # 1..k
    classes: Classes = BITMOJI

    def __post_init__(self) -> None:
        probabilities = np.asarray(self.probabilities, dtype=np.float64)
        if probabilities.shape != (len(self.images), len(self.classes)):
            raise BitmojiError(
                f"out-of-fold probabilities of shape {probabilities.shape} for {len(self.images)} images "
                f"of {len(self.classes)} classes"
            )
        object.__setattr__(self, "probabilities", probabilities)


def image_folder(images: list[str]) -> Path:
    """The folder all `images` are in (their common parent): what oof_predictions.csv names
    them relative to."""
    return Path(os.path.commonpath([str(Path(image).parent) for image in images]))


def write_oof_csv(oof: OutOfFold, path: Path, *, folder: Path | None = None) -> None:
    """`image,label,<classes.prob_columns>,fold` rows, written atomically; with `folder`, each image is named
    relative to it (the file name, for images in one folder): the UI's preview of the file then
    shows which image a row is, and the file does not depend on where the data is."""

    def name(image: str) -> str:
        return os.path.relpath(image, folder) if folder is not None else image

    values = oof.classes.prob_values(oof.probabilities)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow((IMAGE_COLUMN, LABEL_COLUMN, *oof.classes.prob_columns, FOLD_COLUMN))
        for image, label, probabilities, fold in zip(oof.images, oof.labels, values, oof.folds, strict=True):
            row = [name(image), int(label)]
            writer.writerow([*row, *(f"{float(p):.{DECIMALS}f}" for p in probabilities), int(fold)])


def classes_of_columns(columns: tuple[str, ...], path: Path) -> Classes:
    """The classes an OOF file's header names: Bitmoji's `prob_male`, else `prob_<name>` each."""
    middle = columns[2:-1]
    framed = columns[:2] == (IMAGE_COLUMN, LABEL_COLUMN) and columns[-1:] == (FOLD_COLUMN,)
    if framed and middle == (KAGGLE_PROB_COLUMN,):
        return BITMOJI
    if framed and len(middle) >= 2 and all(column.startswith(PROB_PREFIX) for column in middle):
        return Classes(tuple(column[len(PROB_PREFIX) :] for column in middle))
    raise BitmojiError(
        f"{path} is not an out-of-fold file (columns image, label, prob_male or prob_<class> per "
        f"class, fold; found {', '.join(columns)})"
    )


def _probabilities(rows: list[dict[str, str]], classes: Classes) -> np.ndarray:
    values = np.array([[float(row[column]) for column in classes.prob_columns] for row in rows])
    return np.concatenate([1 - values, values], axis=1) if classes.kaggle else values


def _label_index(text: str, classes: Classes) -> int:
    """A label cell: the class index (as written), or a class name."""
    if text in classes.names:
        return classes.names.index(text)
    if not (text.isascii() and text.isdigit() and int(text) < len(classes)):
        raise ValueError(
            f"label {text} is not one of the {len(classes)} classes (an index 0..{len(classes) - 1} "
            f"or a name: {', '.join(classes.names)})"
        )
    return int(text)


def read_oof_csv(path: Path, *, folder: Path | None = None) -> OutOfFold:
    """Parse `write_oof_csv`'s file (its header names the classes), relative image names joined
    to `folder` (absolute ones, from older runs, are kept); a clear error for any other file."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        classes = classes_of_columns(tuple(reader.fieldnames or ()), path)
        rows = list(reader)
    if not rows:
        raise BitmojiError(f"{path} has no rows")
    try:
        return OutOfFold(
            images=[str(folder / row[IMAGE_COLUMN]) if folder else row[IMAGE_COLUMN] for row in rows],
            labels=np.array([_label_index(row[LABEL_COLUMN], classes) for row in rows], dtype=np.int64),
            probabilities=_probabilities(rows, classes),
            folds=np.array([int(row[FOLD_COLUMN]) for row in rows]),
            classes=classes,
        )
    except (ValueError, TypeError) as error:
        raise BitmojiError(f"{path}: malformed row ({error})") from error
