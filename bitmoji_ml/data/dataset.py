"""A labelled dataset as `prepare` sees it (samples, classes, unlabelled images), the Kaggle
Bitmoji layout read and checked (train.csv, trainimages/, testimages/), and what every layout
shares: listing and checking image files, and `--exclude`. The other layouts are in layouts.py."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bitmoji_ml.console import track
from bitmoji_ml.data.classes import BITMOJI, Classes
from bitmoji_ml.data.images import IMAGE_EXTENSIONS, ImageError, check_image
from bitmoji_ml.errors import BitmojiError

TRAIN_CSV = "train.csv"
TRAIN_IMAGES = "trainimages"
TEST_IMAGES = "testimages"
SAMPLE_SUBMISSION = "sample_submission.csv"
REQUIRED_COLUMNS = ("image_id", "is_male")
MAX_LISTED = 10  # offending rows named in one error message
# Kaggle's is_male value -> class index of BITMOJI (female 0, male 1).
KAGGLE_VALUES = {1: BITMOJI.names.index("male"), -1: BITMOJI.names.index("female")}


@dataclasses.dataclass(frozen=True)
class Sample:
    """One labelled image: its id (Kaggle: the file name; other layouts: the path relative to
    the data folder, unique even when two class folders hold equal file names), absolute path
    and class index (into the dataset's classes)."""

    image_id: str
    path: Path
    label: int


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A checked dataset: labelled samples, the unlabelled images of `unlabelled` (the test
    list; no folder given, no test list), its classes, its layout and its labels file."""

    root: Path
    train: list[Sample]
    test: list[Path]
    classes: Classes = BITMOJI
    layout: str = "kaggle"
    labels_file: Path | None = None  # hashed into the manifest (csv_sha256)
    unlabelled: Path | None = None

    def test_id(self, path: Path) -> str:
        """An unlabelled image's id: its path relative to the unlabelled folder."""
        return path.relative_to(self.unlabelled).as_posix() if self.unlabelled else path.name


def list_problems(kind: str, items: list[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED])
    more = f" (and {len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return f"{kind}: {shown}{more}"


def read_labels(csv_path: Path, image_dir: Path) -> list[Sample]:
    """Read a train.csv-format file: rows must have a unique image_id and is_male in {-1, 1}."""
    if not csv_path.is_file():
        raise BitmojiError(f"{csv_path} not found: the Kaggle download has a train.csv here")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [name for name in REQUIRED_COLUMNS if name not in columns]
        if missing:
            raise BitmojiError(f"{csv_path} lacks column(s) {', '.join(missing)} (has: {', '.join(columns)})")
        rows = list(reader)
    if not rows:
        raise BitmojiError(f"{csv_path} has no rows")
    bad_labels, duplicates, seen = [], [], set()
    samples = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        image_id = (row["image_id"] or "").strip()
        raw = (row["is_male"] or "").strip()
        try:
            value = int(float(raw))
            if float(raw) != value or value not in KAGGLE_VALUES:
                raise ValueError
        except (ValueError, OverflowError):
            bad_labels.append(f"line {line} ({image_id}): is_male={raw!r}")
            continue
        if image_id in seen:
            duplicates.append(f"line {line}: {image_id}")
        seen.add(image_id)
        samples.append(Sample(image_id, image_dir / image_id, KAGGLE_VALUES[value]))
    errors = []
    if bad_labels:
        errors.append(list_problems("is_male must be 1 or -1", bad_labels))
    if duplicates:
        errors.append(list_problems("duplicate image_id", duplicates))
    if errors:
        raise BitmojiError(f"{csv_path}: " + "\n".join(errors))
    return samples


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """Labelled images to leave out of the lists (e.g. labels a person judged wrong after
    `bitmoji audit`), read from a CSV with an `image_id` column."""

    source: Path
    sha256: str  # of the file's bytes, recorded in the manifest
    image_ids: list[str]  # sorted, each once


def read_exclusions(path: Path) -> Exclusion:
    """The image ids of a CSV's `image_id` column (blank cells skipped, repeats counted once)."""
    path = Path(path)
    if not path.is_file():
        raise BitmojiError(f"exclude file {path} not found")
    data = path.read_bytes()
    try:
        reader = csv.DictReader(data.decode("utf-8-sig").splitlines())
        columns = reader.fieldnames or []
        if "image_id" not in columns:
            raise BitmojiError(
                f"exclude file {path} has no image_id column (has: {', '.join(columns) or 'nothing'}); "
                "the audit's label_issues.csv has one"
            )
        ids = sorted({(row["image_id"] or "").strip() for row in reader} - {""})
    except (UnicodeDecodeError, csv.Error) as error:
        raise BitmojiError(f"exclude file {path} is not a readable CSV: {error}") from error
    if not ids:
        raise BitmojiError(f"exclude file {path} lists no image ids")
    return Exclusion(path, hashlib.sha256(data).hexdigest(), ids)


def check_exclusions(dataset: Dataset, exclusion: Exclusion) -> set[str]:
    """The image ids of the dataset's samples that `exclusion` names; every excluded id must be a
    labelled image of the dataset (a typo must not pass silently). An id is a sample's image_id
    or, for the own layouts (whose ids are relative paths), a file name that only one labelled
    image has: the audit's label_issues.csv may name images by file name."""
    known = {sample.image_id for sample in dataset.train}
    by_name: dict[str, list[str]] = {}
    for sample in dataset.train:
        by_name.setdefault(sample.path.name, []).append(sample.image_id)
    found, unknown, ambiguous = set(), [], []
    for image_id in exclusion.image_ids:
        if image_id in known:
            found.add(image_id)
        elif len(by_name.get(image_id, [])) == 1:
            found.add(by_name[image_id][0])
        elif image_id in by_name:
            ambiguous.append(f"{image_id} ({', '.join(by_name[image_id][:3])})")
        else:
            unknown.append(image_id)
    where = dataset.labels_file or dataset.root
    if unknown:
        raise BitmojiError(
            list_problems(
                f"{len(unknown)} image id(s) in {exclusion.source} are not labelled images of {where}",
                unknown,
            )
        )
    if ambiguous:
        raise BitmojiError(
            list_problems(
                f"{len(ambiguous)} file name(s) in {exclusion.source} name more than one labelled image: "
                "give the path relative to the data folder",
                ambiguous,
            )
        )
    return found


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (and, `recursive`, its sub-folders), sorted by relative path.
    Hidden files and folders are skipped: `._x.jpg` (macOS metadata) and `.ipynb_checkpoints/`
    are not images of the dataset."""
    if not recursive:
        candidates = [path for path in folder.iterdir() if path.is_file()]
    else:
        candidates = []
        for top, folders, names in os.walk(folder):
            folders[:] = [name for name in folders if not name.startswith(".")]
            candidates += [Path(top) / name for name in names]
    return sorted(
        (
            path
            for path in candidates
            if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
        ),
        key=lambda path: path.relative_to(folder).as_posix(),
    )


def check_images(paths: list[Path], workers: int = 4) -> None:
    """Decode every image once; raise one error naming all missing or undecodable files."""

    def problem(path: Path) -> str | None:
        try:
            check_image(path)
        except ImageError as error:
            return str(error)
        return None

    with ThreadPoolExecutor(workers) as pool:
        checked = track(pool.map(problem, paths), "checking images", total=len(paths))
        problems = [message for message in checked if message]
    if problems:
        raise BitmojiError(list_problems(f"{len(problems)} unusable image(s)", problems))


def load_dataset(root: Path) -> Dataset:
    """Read and fully check a Kaggle-layout dataset; raise BitmojiError naming what is wrong."""
    root = Path(root).resolve()
    for folder in (TRAIN_IMAGES, TEST_IMAGES):
        if not (root / folder).is_dir():
            raise BitmojiError(f"{root / folder}/ not found: the Kaggle download has it")
    train = read_labels(root / TRAIN_CSV, root / TRAIN_IMAGES)
    missing = [sample.image_id for sample in train if not sample.path.is_file()]
    if missing:
        raise BitmojiError(
            list_problems(f"{len(missing)} image(s) in train.csv not in {TRAIN_IMAGES}/", missing)
        )
    test = list_images(root / TEST_IMAGES)
    if not test:
        raise BitmojiError(f"{root / TEST_IMAGES}/ holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    check_images([sample.path for sample in train] + test)
    return Dataset(root, train, test, BITMOJI, "kaggle", root / TRAIN_CSV, root / TEST_IMAGES)
