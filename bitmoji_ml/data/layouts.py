"""The layouts `prepare` reads, detected or stated: Kaggle's Bitmoji download (dataset.py), one
folder per class, or a CSV of image file and label. Each gives a checked `Dataset`; any problem is
a BitmojiError naming the file or value, raised before anything is written."""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

from bitmoji_ml.data.classes import Classes, check_class_names
from bitmoji_ml.data.dataset import (
    MAX_LISTED,
    TEST_IMAGES,
    TRAIN_CSV,
    TRAIN_IMAGES,
    Dataset,
    Sample,
    check_images,
    list_images,
    list_problems,
    load_dataset,
)
from bitmoji_ml.data.images import IMAGE_EXTENSIONS
from bitmoji_ml.errors import BitmojiError

LAYOUTS = ("kaggle", "folders", "csv")
IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"
INTEGER = re.compile(r"-?[0-9]+")
LAYOUT_HELP = (
    "kaggle (train.csv + trainimages/ + testimages/), folders (DIR/<class>/**/<image>), "
    "csv (--labels FILE with --image-column and --label-column, images relative to --data-dir)"
)


@dataclasses.dataclass(frozen=True)
class Source:
    """What `prepare` was asked to read (its flags); None means not given."""

    root: Path
    layout: str | None = None
    labels: Path | None = None
    image_column: str | None = None
    label_column: str | None = None
    classes: tuple[str, ...] | None = None
    unlabelled: Path | None = None


def detect_layout(root: Path, labels: Path | None = None) -> str:
    """--labels -> csv; train.csv + trainimages/ -> kaggle; sub-folders holding images ->
    folders; otherwise an error listing the layouts and their flags. A folder with part of the
    Kaggle layout is Kaggle's, so the error says what is missing rather than "one class"."""
    if labels is not None:
        return "csv"
    if any((root / name).exists() for name in (TRAIN_CSV, TRAIN_IMAGES, TEST_IMAGES)):
        return "kaggle"
    if any(
        folder.is_dir() and not folder.name.startswith(".") and list_images(folder, recursive=True)
        for folder in root.iterdir()
    ):
        return "folders"
    raise BitmojiError(
        f"{root} is none of the layouts prepare reads: {LAYOUT_HELP}. State one with --layout, "
        "or give the labels CSV with --labels"
    )


def load_source(source: Source) -> Dataset:
    """The dataset `source` names, in its stated or detected layout, fully checked."""
    root = Path(source.root).resolve()
    if not root.is_dir():
        raise BitmojiError(f"data folder {root} not found")
    layout = source.layout or detect_layout(root, source.labels)
    if layout not in LAYOUTS:
        raise BitmojiError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    _refuse_flags_of_other_layouts(source, layout)
    if layout == "kaggle":
        return load_dataset(root)
    unlabelled = _unlabelled_images(source.unlabelled)
    if layout == "folders":
        classes, samples = read_class_folders(root, source.classes, skip=unlabelled[0])
        labels_file = None
    else:
        if source.labels is None:
            raise BitmojiError("--layout csv needs the labels CSV: --labels FILE")
        labels_file = Path(source.labels).resolve()
        classes, samples = read_labels_csv(
            labels_file,
            root,
            source.image_column or IMAGE_COLUMN,
            source.label_column or LABEL_COLUMN,
            source.classes,
        )
    folder, test = unlabelled
    labelled = {sample.path for sample in samples}
    both = [str(path) for path in test if path in labelled]
    if both:
        raise BitmojiError(
            list_problems(f"{len(both)} image(s) of --unlabelled {folder} are labelled images", both)
        )
    check_images([sample.path for sample in samples] + test)
    return Dataset(root, samples, test, classes, layout, labels_file, folder)


def _refuse_flags_of_other_layouts(source: Source, layout: str) -> None:
    given = {
        "--labels": source.labels is not None,
        "--image-column": source.image_column is not None,
        "--label-column": source.label_column is not None,
        "--classes": source.classes is not None,
        "--unlabelled": source.unlabelled is not None,
    }
    applies = {
        "kaggle": (),
        "folders": ("--classes", "--unlabelled"),
        "csv": tuple(given),
    }[layout]
    wrong = [flag for flag, present in given.items() if present and flag not in applies]
    if wrong:
        why = (
            " (its classes are female and male, its unlabelled images testimages/)"
            if layout == "kaggle"
            else ""
        )
        raise BitmojiError(f"{', '.join(wrong)} do(es) not apply to the {layout} layout{why}")


def _unlabelled_images(folder: Path | None) -> tuple[Path | None, list[Path]]:
    """The --unlabelled folder and its images (recursive); no folder given, no images."""
    if folder is None:
        return None, []
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise BitmojiError(f"--unlabelled folder {folder} not found")
    images = list_images(folder, recursive=True)
    if not images:
        raise BitmojiError(f"--unlabelled folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return folder, images


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """--classes a,b,c as a tuple (blanks around names ignored); None when not given."""
    if text is None:
        return None
    return check_class_names([name.strip() for name in text.split(",")], "--classes")


def _ordered(found: Sequence[str], given: tuple[str, ...] | None, where: str) -> Classes:
    """The classes in the order given by --classes, else sorted (integers numerically)."""
    if given is None:
        numeric = all(INTEGER.fullmatch(name) for name in found)
        names = sorted(found, key=int) if numeric else sorted(found)
        return Classes(check_class_names(names, where))
    unknown = sorted(set(found) - set(given))
    if unknown:
        raise BitmojiError(
            f"{where} name(s) {', '.join(map(repr, unknown[:MAX_LISTED]))} not in --classes {','.join(given)}"
        )
    empty = [name for name in given if name not in found]
    if empty:
        raise BitmojiError(f"class(es) {', '.join(map(repr, empty))} of --classes have no images in {where}")
    return Classes(given)


def read_class_folders(
    root: Path, given: tuple[str, ...] | None = None, skip: Path | None = None
) -> tuple[Classes, list[Sample]]:
    """One folder per class (`root/<class>/**/<image>`): the classes and the samples, each with
    its path relative to `root` as image id. `skip` (the --unlabelled folder) is no class."""
    folders = sorted(
        path
        for path in root.iterdir()
        if path.is_dir() and not path.name.startswith(".") and (skip is None or path.resolve() != skip)
    )
    loose = [path.name for path in list_images(root)]
    if loose:
        raise BitmojiError(
            list_problems(
                f"{len(loose)} image(s) directly in {root} belong to no class folder (move them into "
                "one, or give unlabelled images with --unlabelled)",
                loose,
            )
        )
    where = f"the class folders of {root}"
    images = {folder.name: list_images(folder, recursive=True) for folder in folders}
    empty = [f"{folder}/" for folder in folders if not images[folder.name]]
    if empty:
        raise BitmojiError(
            list_problems(f"class folder(s) with no images ({', '.join(IMAGE_EXTENSIONS)})", empty)
        )
    classes = _ordered(list(images), given, where)
    samples = [
        Sample(path.relative_to(root).as_posix(), path, index)
        for index, name in enumerate(classes.names)
        for path in images[name]
    ]
    return classes, samples


def _read_rows(csv_path: Path, columns: tuple[str, str]) -> list[tuple[int, str, str]]:
    """(line, image cell, label cell) per row of a labels CSV that has both `columns`."""
    if not csv_path.is_file():
        raise BitmojiError(f"labels CSV {csv_path} not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [name for name in columns if name not in header]
            if missing:
                raise BitmojiError(
                    f"{csv_path} has no column(s) {', '.join(map(repr, missing))} (has: "
                    f"{', '.join(header) or 'nothing'}); name them with --image-column / --label-column"
                )
            rows = [
                (line, (row[columns[0]] or "").strip(), (row[columns[1]] or "").strip())
                for line, row in enumerate(reader, start=2)  # line 1 is the header
            ]
    except (UnicodeDecodeError, csv.Error) as error:
        raise BitmojiError(f"{csv_path} is not a readable UTF-8 CSV: {error}") from error
    if not rows:
        raise BitmojiError(f"{csv_path} has no rows")
    return rows


def _image_path(root: Path, cell: str) -> Path | None:
    """The image a CSV cell names, relative to `root` (None when it points outside it)."""
    path = Path(os.path.normpath(root / cell))
    return path if path.is_relative_to(root) and path != root else None


def read_labels_csv(
    csv_path: Path, root: Path, image_column: str, label_column: str, given: tuple[str, ...] | None = None
) -> tuple[Classes, list[Sample]]:
    """A CSV of image file (relative to `root`) and label: the classes (labels sorted, integers
    numerically, or as `given`) and the samples in the CSV's order."""
    rows = _read_rows(csv_path, (image_column, label_column))
    blank, outside, duplicates, missing, seen = [], [], [], [], {}
    entries = []
    for line, cell, label in rows:
        if not cell or not label:
            blank.append(f"line {line}: {image_column}={cell!r}, {label_column}={label!r}")
            continue
        path = _image_path(root, cell)
        if path is None:
            outside.append(f"line {line}: {cell}")
            continue
        image_id = path.relative_to(root).as_posix()
        if image_id in seen:
            duplicates.append(f"line {line}: {cell} (also line {seen[image_id]})")
            continue
        seen[image_id] = line
        if not path.is_file():
            missing.append(f"line {line}: {cell}")
        if INTEGER.fullmatch(label):
            label = str(int(label))  # 007 and 7 are one class
        entries.append((image_id, path, label))
    problems = [
        list_problems(kind, items)
        for kind, items in (
            ("blank cell(s)", blank),
            (f"image(s) outside {root}", outside),
            ("image(s) listed twice", duplicates),
            (f"{len(missing)} image file(s) not found under {root}", missing),
        )
        if items
    ]
    if problems:
        raise BitmojiError(f"{csv_path}: " + "\n".join(problems))
    classes = _ordered(
        sorted({label for _, _, label in entries}), given, f"column {label_column!r} of {csv_path}"
    )
    index = {name: number for number, name in enumerate(classes.names)}
    return classes, [Sample(image_id, path, index[label]) for image_id, path, label in entries]
