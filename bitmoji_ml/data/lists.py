"""Image lists (`<image path> <class index>` per line, the class being the manifest's
`classes.names[index]`; test lists carry no label) and the manifest that describes them. Same
inputs give byte-identical files."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.dataset import TRAIN_CSV, Dataset, Exclusion, Sample, check_exclusions
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import replace_folder_atomic

LIST_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
MANIFEST = "manifest.json"
SPLITS = ("stratified", "head")


def split_samples(
    samples: list[Sample],
    val_fraction: float,
    seed: int,
    method: str = "stratified",
    classes: Classes | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """Split into (train, val). `stratified` keeps the class balance in both parts (seeded), each
    class with at least one image on each side; `head` reproduces the seed project: the first
    rows train, the rest validate. `classes` names the classes in error messages."""
    if not 0 < val_fraction < 1:
        raise BitmojiError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if method not in SPLITS:
        raise BitmojiError(f"unknown split {method!r}; use one of {', '.join(SPLITS)}")
    n_val = round(len(samples) * val_fraction)
    if n_val == 0 or n_val == len(samples):
        raise BitmojiError(f"{len(samples)} images with --val-fraction {val_fraction} leave an empty split")
    if method == "head":
        cut = len(samples) - n_val
        return samples[:cut], samples[cut:]
    by_label: dict[int, list[Sample]] = {}
    for sample in samples:
        by_label.setdefault(sample.label, []).append(sample)
    sizes = {label: len(group) for label, group in by_label.items()}
    quota = _val_quotas(
        sizes, n_val, [classes.names[k] if classes else str(k) for k in range(max(sizes) + 1)]
    )
    labels = sorted(by_label)
    rng = random.Random(seed)
    val_ids: set[str] = set()
    for label in labels:
        ids = [sample.image_id for sample in by_label[label]]
        rng.shuffle(ids)
        val_ids.update(ids[: quota[label]])
    train = [sample for sample in samples if sample.image_id not in val_ids]
    val = [sample for sample in samples if sample.image_id in val_ids]
    return train, val


def _val_quotas(sizes: dict[int, int], n_val: int, names: list[str]) -> dict[int, int]:
    """Validation images per class: the largest-remainder share of `n_val`, then moved so that
    every class keeps at least one image on each side (a class missing from validation has no
    recall to report). Shares that already satisfy that (any balanced dataset) are kept as is."""
    total = sum(sizes.values())
    labels = sorted(sizes)
    exact = {label: sizes[label] * n_val / total for label in labels}
    quota = {label: int(exact[label]) for label in labels}
    for label in sorted(labels, key=lambda k: (quota[k] - exact[k], k))[: n_val - sum(quota.values())]:
        quota[label] += 1
    small = [repr(names[label]) for label in labels if sizes[label] < 2]
    if small:
        raise BitmojiError(
            f"class(es) {', '.join(small)} have a single image: a class needs two or more (one to "
            "train on, one to validate)"
        )
    if len(labels) > n_val:
        raise BitmojiError(
            f"{n_val} validation image(s) cannot hold one of each of the {len(labels)} classes: "
            "raise --val-fraction"
        )
    if n_val > total - len(labels):
        raise BitmojiError(
            f"{n_val} validation image(s) of {total} leave a class without a training image: "
            "lower --val-fraction"
        )
    for label in labels:
        quota[label] = min(max(quota[label], 1), sizes[label] - 1)
    # Give back (or take) the difference from the classes furthest above (below) their share.
    while sum(quota.values()) > n_val:
        label = max((k for k in labels if quota[k] > 1), key=lambda k: (quota[k] - exact[k], -k))
        quota[label] -= 1
    while sum(quota.values()) < n_val:
        label = min((k for k in labels if quota[k] < sizes[k] - 1), key=lambda k: (quota[k] - exact[k], k))
        quota[label] += 1
    return quota


def format_list(samples: list[Sample]) -> str:
    """Labelled list text: `<path> <label>` lines."""
    return "".join(f"{sample.path} {sample.label}\n" for sample in samples)


def manifest_classes(manifest: dict) -> Classes:
    """The classes the lists' labels index, as `prepare` recorded them (none: Bitmoji)."""
    try:
        return Classes.from_dict(manifest.get("classes"))
    except (KeyError, TypeError) as error:
        raise BitmojiError(
            f"{MANIFEST} has a malformed classes entry ({error}): re-run `bitmoji prepare`"
        ) from error


def read_list(path: str | Path, labelled: bool = True) -> list[tuple[Path, int]]:
    """Parse a list file into (image path, class index) pairs; the index is -1 for an unlabelled
    list. A list beside a manifest.json must have the digest the manifest records for it, and
    indices below its number of classes."""
    path = Path(path)
    if not path.is_file():
        raise BitmojiError(f"list {path} not found: run `bitmoji prepare` first")
    data = path.read_bytes()
    manifest = _check_digest(path, data)
    n_classes = len(manifest_classes(manifest)) if manifest is not None else None
    entries = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if not labelled:
            entries.append((Path(line), -1))
            continue
        image, _, label = line.rpartition(" ")
        if not image or not label.isascii() or not label.isdigit() or (n_classes and int(label) >= n_classes):
            expected = f"0..{n_classes - 1}" if n_classes else "a class index"
            raise BitmojiError(f"{path}:{number}: expected `<image path> <{expected}>`, got {line!r}")
        entries.append((Path(image), int(label)))
    if not entries:
        raise BitmojiError(f"list {path} is empty")
    return entries


def _balance(samples: list[Sample], classes: Classes) -> dict:
    """Images per class of one split (the manifest's class_balance[split])."""
    counts = Counter(sample.label for sample in samples)
    return {
        "images": len(samples),
        "counts": {name: counts[index] for index, name in enumerate(classes.names)},
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def exclude_samples(
    train: list[Sample], val: list[Sample], left_out: set[str], source: Path | None = None
) -> tuple[list[Sample], list[Sample]]:
    """The split without the images whose ids are `left_out`. The split is made first, so every
    other image stays in the split it has without --exclude (validation scores stay comparable)."""
    if not left_out:
        return train, val
    train = [sample for sample in train if sample.image_id not in left_out]
    val = [sample for sample in val if sample.image_id not in left_out]
    if not train or not val:
        raise BitmojiError(f"excluding the {len(left_out)} image(s) of {source} leaves an empty split")
    return train, val


def _portable_listing(dataset: Dataset, train: list[Sample], val: list[Sample]) -> str:
    """What the digest covers: ids and class indices, not where the data folder is, so the same
    data digests the same anywhere. Other layouts than Kaggle's (whose digest is as in round 1)
    also cover the layout and the class names: renaming a class changes the digest."""
    head = (
        ""
        if dataset.layout == "kaggle"
        else f"layout:{dataset.layout}\nclasses:{','.join(dataset.classes.names)}\n"
    )
    return (
        head
        + "".join(
            f"{name}:{sample.image_id} {sample.label}\n"
            for name, part in (("train", train), ("val", val))
            for sample in part
        )
        + "".join(f"test:{dataset.test_id(path)}\n" for path in dataset.test)
    )


def _check_every_class_on_both_sides(
    classes: Classes, train: list[Sample], val: list[Sample], split: str, excluded: Exclusion | None
) -> None:
    """A class with no training image cannot be learnt, one with no validation image has no
    recall: refuse such a split (the stratified split never makes one, but --exclude can, and
    --split head can when the rows are sorted by class)."""
    for part, samples in (("training", train), ("validation", val)):
        lost = sorted(set(range(len(classes))) - {sample.label for sample in samples})
        if lost:
            names = ", ".join(repr(classes.names[index]) for index in lost)
            cause = f"excluding the images of {excluded.source}" if excluded else f"the {split} split"
            hint = "; use --split stratified" if split == "head" else ""
            raise BitmojiError(f"{cause} leaves no {part} image of {names}{hint}")


def write_lists(
    dataset: Dataset,
    out_dir: Path,
    val_fraction: float = 0.2,
    seed: int = 0,
    split: str = "stratified",
    excluded: Exclusion | None = None,
) -> dict:
    """Split, leave out the `excluded` images, then write train/val(/test) lists and
    manifest.json as one set (the folder is swapped atomically); return the manifest. The test
    list is written when the dataset has an unlabelled folder (Kaggle's testimages/ always)."""
    left_out = check_exclusions(dataset, excluded) if excluded is not None else set()
    train, val = split_samples(dataset.train, val_fraction, seed, split, dataset.classes)
    train, val = exclude_samples(train, val, left_out, excluded.source if excluded else None)
    _check_every_class_on_both_sides(dataset.classes, train, val, split, excluded)
    texts = {"train": format_list(train), "val": format_list(val)}
    if dataset.layout == "kaggle" or dataset.unlabelled is not None:
        texts["test"] = "".join(f"{path}\n" for path in dataset.test)
    manifest = {
        "data_dir": str(dataset.root),
        "layout": dataset.layout,
        "classes": dataset.classes.to_dict(),
        "split": split,
        "seed": seed,
        "val_fraction": val_fraction,
        "counts": {"train": len(train), "val": len(val), "test": len(dataset.test)},
        "class_balance": {"train": _balance(train, dataset.classes), "val": _balance(val, dataset.classes)},
        "digest": _sha256(_portable_listing(dataset, train, val).encode()),
        "files": {LIST_FILES[name]: _sha256(text.encode()) for name, text in texts.items()},
    }
    labels_file = dataset.labels_file or (dataset.root / TRAIN_CSV if dataset.layout == "kaggle" else None)
    if labels_file is not None:  # the labels' bytes: a relabelled CSV is another dataset
        manifest["csv_sha256"] = _sha256(Path(labels_file).read_bytes())
    if dataset.layout != "kaggle":
        manifest["labels_file"] = str(dataset.labels_file) if dataset.labels_file else None
        manifest["unlabelled_dir"] = str(dataset.unlabelled) if dataset.unlabelled else None
    if excluded is not None:
        manifest["excluded"] = {
            "file": str(Path(excluded.source).resolve()),
            "sha256": excluded.sha256,
            "image_ids": excluded.image_ids,
        }
    files = {LIST_FILES[name]: text.encode() for name, text in texts.items()}
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    # The lists and manifest are one set: the whole folder is swapped, never file by file.
    replace_folder_atomic(out_dir, files)
    return manifest


def read_manifest(lists_dir: Path) -> dict:
    """The manifest written by `prepare`, after checking that every list it names is there
    with the recorded digest; a clear error otherwise."""
    path = Path(lists_dir) / MANIFEST
    if not path.is_file():
        raise BitmojiError(f"{path} not found: run `bitmoji prepare` first")
    manifest = _load_manifest(path)
    for name in manifest.get("files", {}):
        if not (path.parent / name).is_file():
            raise BitmojiError(f"{path.parent / name} (named in {path}) not found: re-run `bitmoji prepare`")
        _check_digest(path.parent / name, (path.parent / name).read_bytes(), manifest)
    return manifest


def _load_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BitmojiError(
            f"{path} is not a readable manifest ({error}): re-run `bitmoji prepare`"
        ) from error
    if not isinstance(manifest, dict):
        raise BitmojiError(f"{path} is not a readable manifest: re-run `bitmoji prepare`")
    return manifest


def _check_digest(path: Path, data: bytes, manifest: dict | None = None) -> dict | None:
    """Refuse a list whose bytes differ from what the manifest beside it recorded: a list
    from another `prepare` run (or edited) must not be mixed with this one. Returns the
    manifest (None for a list of one's own, with no manifest beside it)."""
    if manifest is None:
        manifest_path = path.parent / MANIFEST
        if not manifest_path.is_file():
            return None  # a list of one's own, not written by `prepare`
        manifest = _load_manifest(manifest_path)
    expected = manifest.get("files", {}).get(path.name)
    if expected is not None and _sha256(data) != expected:
        raise BitmojiError(
            f"{path} does not match {path.parent / MANIFEST} (sha256 {_sha256(data)[:12]}, manifest "
            f"{str(expected)[:12]}): the lists are not one `prepare` run's set (edited, or a "
            "half-finished write); re-run `bitmoji prepare`"
        )
    return manifest
