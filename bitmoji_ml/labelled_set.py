"""The labelled set `bitmoji evaluate` scores, and the classes it is labelled with: a `prepare`
list (class indices, the classes in the manifest beside it), Bitmoji's train.csv, or a CSV of
image file and class name of one's own (matched to the model's classes by name)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from bitmoji_ml.data.classes import BITMOJI, Classes
from bitmoji_ml.errors import BitmojiError

KAGGLE_COLUMNS = ("image_id", "is_male")


@dataclasses.dataclass
class LabelledSet:
    """Images with class indices, the file they came from, a short name for run names, and the
    classes the indices refer to (None: a list of one's own, with no manifest to say). `named`:
    the labels were class names (a CSV of one's own), `classes` only those it holds, sorted."""

    paths: list[Path]
    labels: np.ndarray
    source: Path
    name: str
    classes: Classes | None = None
    named: bool = False


def read_labelled(
    labels_file: Path,
    images_dir: Path | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
) -> LabelledSet:
    """A `prepare` list (`<path> <class index>`) or a .csv: Bitmoji's train.csv format
    (image_id, is_male) unless columns are named or it lacks them, else image file and class
    name (`image_column` [image], `label_column` [label]). The images of a CSV are in
    `images_dir` [default: trainimages/ beside a train.csv, else the CSV's folder]."""
    from bitmoji_ml.data.lists import read_list

    labels_file = Path(labels_file)
    named = False
    if labels_file.suffix.lower() != ".csv":
        if not labels_file.is_file():
            raise BitmojiError(f"list {labels_file} not found: run `bitmoji prepare` or pass --labels")
        entries, classes = read_list(labels_file), _list_classes(labels_file)
    elif image_column is None and label_column is None and _is_kaggle_csv(labels_file):
        entries, classes = _kaggle_entries(labels_file, images_dir), BITMOJI
    else:
        entries, classes = _named_entries(labels_file, images_dir, image_column, label_column)
        named = True
    missing = [str(path) for path, _ in entries if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        hint = " (pass --images for the CSV's image folder)" if labels_file.suffix.lower() == ".csv" else ""
        raise BitmojiError(f"{len(missing)} image(s) of {labels_file} not found{hint}: {shown}")
    labels = np.array([label for _, label in entries], dtype=int)
    return LabelledSet([path for path, _ in entries], labels, labels_file, labels_file.stem, classes, named)


def _list_classes(list_file: Path) -> Classes | None:
    """The classes of the `prepare` manifest beside a list (none recorded: Bitmoji's), or None
    for a list with no manifest beside it."""
    from bitmoji_ml.data.lists import MANIFEST, manifest_classes, read_manifest

    if not (list_file.parent / MANIFEST).is_file():
        return None
    return manifest_classes(read_manifest(list_file.parent))


def _is_kaggle_csv(path: Path) -> bool:
    """Whether a CSV's header has Bitmoji's train.csv columns (a missing file: assume so, and
    let the reader say it is missing)."""
    if not path.is_file():
        return True
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    return all(column in header for column in KAGGLE_COLUMNS)


def _kaggle_entries(path: Path, images_dir: Path | None) -> list[tuple[Path, int]]:
    from bitmoji_ml.data.dataset import TRAIN_IMAGES, read_labels

    if images_dir is None:
        beside = path.parent / TRAIN_IMAGES
        images_dir = beside if beside.is_dir() else path.parent
    return [(sample.path, sample.label) for sample in read_labels(path, Path(images_dir))]


def _named_entries(
    path: Path, images_dir: Path | None, image_column: str | None, label_column: str | None
) -> tuple[list[tuple[Path, int]], Classes]:
    """A labels CSV as `prepare --layout csv` reads it (its checks, two classes at least): the
    classes it names (sorted) and the images, indices into those."""
    from bitmoji_ml.data.layouts import IMAGE_COLUMN, LABEL_COLUMN, read_labels_csv

    root = Path(images_dir) if images_dir is not None else path.parent
    columns = (image_column or IMAGE_COLUMN, label_column or LABEL_COLUMN)
    classes, samples = read_labels_csv(path, root, *columns)
    return [(sample.path, sample.label) for sample in samples], classes


def for_model(data: LabelledSet, model: Classes, model_label: str) -> LabelledSet:
    """`data` with its labels as indices of the `model`'s classes, or a BitmojiError: a set
    labelled with other classes (names or order) would compare its label i with the model's
    output i. A list of one's own (no manifest) names no classes: its indices must fit the
    model's. Class names (a CSV of one's own) must be classes of the model."""
    if data.named:
        unknown = [name for name in data.classes.names if name not in model.names]
        if unknown:
            raise BitmojiError(
                f"{data.source} labels images {', '.join(map(repr, unknown))}, which the model {model_label} "
                f"does not tell apart (its classes: {', '.join(model.names)})"
            )
        index = np.array([model.names.index(name) for name in data.classes.names])
        return dataclasses.replace(data, labels=index[data.labels], classes=model, named=False)
    if data.classes is None:
        outside = sorted({int(label) for label in data.labels if not 0 <= label < len(model)})
        if outside:
            raise BitmojiError(
                f"{data.source} has label(s) {', '.join(map(str, outside[:5]))} but the model {model_label} "
                f"has {len(model)} classes (0..{len(model) - 1}: {', '.join(model.names)})"
            )
        return dataclasses.replace(data, classes=model)
    if data.classes.names != model.names:
        raise BitmojiError(
            f"the model {model_label} tells apart {', '.join(model.names)} but {data.source} is labelled "
            f"{', '.join(data.classes.names)}: score it on a set prepared with the same classes in the "
            "same order"
        )
    return data
