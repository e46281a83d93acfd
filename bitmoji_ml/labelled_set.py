"""The labelled set `bitmoji evaluate` scores: a `prepare` list or a train.csv-format CSV, and
the classes it is labelled with."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bitmoji_ml.data.classes import BITMOJI, Classes
from bitmoji_ml.errors import BitmojiError


@dataclasses.dataclass
class LabelledSet:
    """Images with class indices, the file they came from, a short name for run names, and the
    classes the indices refer to (None: a list of one's own, with no manifest to say)."""

    paths: list[Path]
    labels: np.ndarray
    source: Path
    name: str
    classes: Classes | None = None


def read_labelled(labels_file: Path, images_dir: Path | None = None) -> LabelledSet:
    """A `prepare` list (`<path> <class index>`, its classes from the manifest beside it) or,
    for a .csv, a train.csv-format file (Bitmoji) whose images are in `images_dir` [default:
    trainimages/ beside the CSV, else the CSV's folder]."""
    from bitmoji_ml.data.dataset import TRAIN_IMAGES, read_labels
    from bitmoji_ml.data.lists import read_list

    labels_file = Path(labels_file)
    if labels_file.suffix.lower() == ".csv":
        if images_dir is None:
            beside = labels_file.parent / TRAIN_IMAGES
            images_dir = beside if beside.is_dir() else labels_file.parent
        samples = read_labels(labels_file, Path(images_dir))
        entries = [(sample.path, sample.label) for sample in samples]
        classes = BITMOJI
    else:
        if not labels_file.is_file():
            raise BitmojiError(f"list {labels_file} not found: run `bitmoji prepare` or pass --labels")
        entries = read_list(labels_file)
        classes = _list_classes(labels_file)
    missing = [str(path) for path, _ in entries if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        hint = " (pass --images for the CSV's image folder)" if labels_file.suffix.lower() == ".csv" else ""
        raise BitmojiError(f"{len(missing)} image(s) of {labels_file} not found{hint}: {shown}")
    return LabelledSet(
        [path for path, _ in entries],
        np.array([label for _, label in entries], dtype=int),
        labels_file,
        labels_file.stem,
        classes,
    )


def _list_classes(list_file: Path) -> Classes | None:
    """The classes of the `prepare` manifest beside a list (none recorded: Bitmoji's), or None
    for a list with no manifest beside it."""
    from bitmoji_ml.data.lists import MANIFEST, read_manifest

    if not (list_file.parent / MANIFEST).is_file():
        return None
    return Classes.from_dict(read_manifest(list_file.parent).get("classes"))
