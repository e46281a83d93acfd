"""The Kaggle dataset layout, read and checked: train.csv, trainimages/, testimages/."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bitmoji_ml.console import track
from bitmoji_ml.data.images import IMAGE_EXTENSIONS, ImageError, check_image
from bitmoji_ml.data.labels import KAGGLE_LABELS, kaggle_to_index
from bitmoji_ml.errors import BitmojiError

TRAIN_CSV = "train.csv"
TRAIN_IMAGES = "trainimages"
TEST_IMAGES = "testimages"
SAMPLE_SUBMISSION = "sample_submission.csv"
REQUIRED_COLUMNS = ("image_id", "is_male")
MAX_LISTED = 10  # offending rows named in one error message


@dataclasses.dataclass(frozen=True)
class Sample:
    """One labelled image: its id (file name), absolute path and class index (1 male)."""

    image_id: str
    path: Path
    label: int


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A checked dataset: labelled training samples and unlabelled test images."""

    root: Path
    train: list[Sample]
    test: list[Path]


def _problems(kind: str, items: list[str]) -> str:
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
            if float(raw) != value or value not in KAGGLE_LABELS:
                raise ValueError
        except (ValueError, OverflowError):
            bad_labels.append(f"line {line} ({image_id}): is_male={raw!r}")
            continue
        if image_id in seen:
            duplicates.append(f"line {line}: {image_id}")
        seen.add(image_id)
        samples.append(Sample(image_id, image_dir / image_id, kaggle_to_index(value)))
    errors = []
    if bad_labels:
        errors.append(_problems("is_male must be 1 or -1", bad_labels))
    if duplicates:
        errors.append(_problems("duplicate image_id", duplicates))
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


def check_exclusions(dataset: Dataset, exclusion: Exclusion) -> None:
    """Every excluded id must be a labelled image of the dataset: a typo must not pass silently."""
    known = {sample.image_id for sample in dataset.train}
    unknown = [image_id for image_id in exclusion.image_ids if image_id not in known]
    if unknown:
        raise BitmojiError(
            _problems(
                f"{len(unknown)} image id(s) in {exclusion.source} are not labelled images of "
                f"{dataset.root / TRAIN_CSV}",
                unknown,
            )
        )


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    return sorted(
        path for path in folder.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
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
        raise BitmojiError(_problems(f"{len(problems)} unusable image(s)", problems))


def load_dataset(root: Path) -> Dataset:
    """Read and fully check a Kaggle-layout dataset; raise BitmojiError naming what is wrong."""
    root = Path(root).resolve()
    for folder in (TRAIN_IMAGES, TEST_IMAGES):
        if not (root / folder).is_dir():
            raise BitmojiError(f"{root / folder}/ not found: the Kaggle download has it")
    train = read_labels(root / TRAIN_CSV, root / TRAIN_IMAGES)
    missing = [sample.image_id for sample in train if not sample.path.is_file()]
    if missing:
        raise BitmojiError(_problems(f"{len(missing)} image(s) in train.csv not in {TRAIN_IMAGES}/", missing))
    test = list_images(root / TEST_IMAGES)
    if not test:
        raise BitmojiError(f"{root / TEST_IMAGES}/ holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    check_images([sample.path for sample in train] + test)
    return Dataset(root=root, train=train, test=test)
