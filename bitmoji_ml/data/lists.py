"""Image lists (`<image path> <class index>` per line, Bitmoji: 1 male / 0 female; test lists carry no label)
and the manifest that describes them. Same inputs give byte-identical files."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from bitmoji_ml.data.dataset import TRAIN_CSV, Dataset, Exclusion, Sample, check_exclusions
from bitmoji_ml.data.labels import CLASS_NAMES
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import replace_folder_atomic

LIST_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
MANIFEST = "manifest.json"
SPLITS = ("stratified", "head")


def split_samples(
    samples: list[Sample], val_fraction: float, seed: int, method: str = "stratified"
) -> tuple[list[Sample], list[Sample]]:
    """Split into (train, val). `stratified` keeps the class balance in both parts (seeded);
    `head` reproduces the seed project: the first rows train, the rest validate."""
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
    # Largest-remainder allocation: per-class quotas that add up to exactly n_val.
    labels = sorted(by_label)
    exact = {label: len(by_label[label]) * n_val / len(samples) for label in labels}
    quota = {label: int(exact[label]) for label in labels}
    for label in sorted(labels, key=lambda k: (quota[k] - exact[k], k))[: n_val - sum(quota.values())]:
        quota[label] += 1
    rng = random.Random(seed)
    val_ids: set[str] = set()
    for label in labels:
        ids = [sample.image_id for sample in by_label[label]]
        rng.shuffle(ids)
        val_ids.update(ids[: quota[label]])
    train = [sample for sample in samples if sample.image_id not in val_ids]
    val = [sample for sample in samples if sample.image_id in val_ids]
    return train, val


def format_list(samples: list[Sample]) -> str:
    """Labelled list text: `<path> <label>` lines."""
    return "".join(f"{sample.path} {sample.label}\n" for sample in samples)


def read_list(path: str | Path, labelled: bool = True) -> list[tuple[Path, int]]:
    """Parse a list file into (image path, label) pairs; label is -1 for an unlabelled list.

    A list beside a manifest.json must have the digest the manifest records for it."""
    path = Path(path)
    if not path.is_file():
        raise BitmojiError(f"list {path} not found: run `bitmoji prepare` first")
    data = path.read_bytes()
    _check_digest(path, data)
    entries = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if not labelled:
            entries.append((Path(line), -1))
            continue
        image, _, label = line.rpartition(" ")
        # Any class index: whether it names one of the manifest's classes is checked by training.
        if not image or not (label.isascii() and label.isdigit()):
            raise BitmojiError(f"{path}:{number}: expected `<image path> <class index>`, got {line!r}")
        entries.append((Path(image), int(label)))
    if not entries:
        raise BitmojiError(f"list {path} is empty")
    return entries


def _balance(samples: list[Sample]) -> dict:
    counts = Counter(sample.label for sample in samples)
    return {
        "images": len(samples),
        CLASS_NAMES[1]: counts[1],
        CLASS_NAMES[0]: counts[0],
        "male_share": round(counts[1] / len(samples), 4),
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def exclude_samples(
    train: list[Sample], val: list[Sample], excluded: Exclusion | None
) -> tuple[list[Sample], list[Sample]]:
    """The split without the excluded images. The split is made first, so every other image
    stays in the split it has without --exclude (validation scores stay comparable)."""
    if excluded is None:
        return train, val
    left_out = set(excluded.image_ids)
    train = [sample for sample in train if sample.image_id not in left_out]
    val = [sample for sample in val if sample.image_id not in left_out]
    if not train or not val:
        raise BitmojiError(
            f"excluding the {len(left_out)} image(s) of {excluded.source} leaves an empty split"
        )
    return train, val


def write_lists(
    dataset: Dataset,
    out_dir: Path,
    val_fraction: float = 0.2,
    seed: int = 0,
    split: str = "stratified",
    excluded: Exclusion | None = None,
) -> dict:
    """Split, leave out the `excluded` images, then write train/val/test lists and
    manifest.json as one set (the folder is swapped atomically); return the manifest."""
    if excluded is not None:
        check_exclusions(dataset, excluded)
    train, val = exclude_samples(*split_samples(dataset.train, val_fraction, seed, split), excluded)
    texts = {
        "train": format_list(train),
        "val": format_list(val),
        "test": "".join(f"{path}\n" for path in dataset.test),
    }
    # The digest ignores where the data folder is, so the same data digests the same anywhere.
    portable = "".join(
        f"{name}:{sample.image_id} {sample.label}\n"
        for name, part in (("train", train), ("val", val))
        for sample in part
    ) + "".join(f"test:{path.name}\n" for path in dataset.test)
    manifest = {
        "data_dir": str(dataset.root),
        "split": split,
        "seed": seed,
        "val_fraction": val_fraction,
        "counts": {"train": len(train), "val": len(val), "test": len(dataset.test)},
        "class_balance": {"train": _balance(train), "val": _balance(val)},
        "digest": _sha256(portable.encode()),
        "csv_sha256": _sha256((dataset.root / TRAIN_CSV).read_bytes()),
        "files": {LIST_FILES[name]: _sha256(text.encode()) for name, text in texts.items()},
    }
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


def _check_digest(path: Path, data: bytes, manifest: dict | None = None) -> None:
    """Refuse a list whose bytes differ from what the manifest beside it recorded: a list
    from another `prepare` run (or edited) must not be mixed with this one."""
    if manifest is None:
        manifest_path = path.parent / MANIFEST
        if not manifest_path.is_file():
            return  # a list of one's own, not written by `prepare`
        manifest = _load_manifest(manifest_path)
    expected = manifest.get("files", {}).get(path.name)
    if expected is not None and _sha256(data) != expected:
        raise BitmojiError(
            f"{path} does not match {path.parent / MANIFEST} (sha256 {_sha256(data)[:12]}, manifest "
            f"{str(expected)[:12]}): the lists are not one `prepare` run's set (edited, or a "
            "half-finished write); re-run `bitmoji prepare`"
        )
