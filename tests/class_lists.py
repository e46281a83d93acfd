"""Lists and a manifest of N classes, as `prepare` writes them (contract of issue 18: `<image>
<class index>` lines, `manifest.json` with `classes`, `digest` and each list's sha256), over
scikit-learn's digits written as small PNGs (tests/own_images.py). For the training-side tests,
which must not depend on how `prepare` reads a folder layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from own_images import DIGIT_NAMES, digit_images

from bitmoji_ml.data.classes import Classes


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_lists_and_manifest(
    lists: Path, train: list[tuple[Path, int]], val: list[tuple[Path, int]], classes: Classes
) -> Path:
    """`lists`/train.txt, val.txt and manifest.json for the (image, class index) entries."""
    lists.mkdir(parents=True, exist_ok=True)
    parts = {"train": train, "val": val}
    texts = {name: "".join(f"{path} {label}\n" for path, label in part) for name, part in parts.items()}
    # Like prepare's digest: image names and labels, not where the data folder is.
    portable = "".join(
        f"{name}:{path.name} {label}\n" for name, part in parts.items() for path, label in part
    )
    manifest = {
        "layout": "folders",
        "classes": classes.to_dict(),
        "counts": {"train": len(train), "val": len(val), "test": 0},
        "digest": _sha256(portable),
        "files": {f"{name}.txt": _sha256(text) for name, text in texts.items()},
    }
    for name, text in texts.items():
        (lists / f"{name}.txt").write_text(text, encoding="utf-8")
    (lists / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return lists


def digit_lists(
    root: Path, digits: tuple[int, ...] = (0, 1, 2), per_class: int = 16, val_per_class: int = 4
) -> Path:
    """Digits `digits` as PNGs under `root`/images and lists of them under `root`/lists: the
    first `val_per_class` images of each class validate, the others train. Class i is
    DIGIT_NAMES[digits[i]]. Returns the lists folder."""
    images = root / "images"
    images.mkdir(parents=True)
    train, val, seen = [], [], dict.fromkeys(digits, 0)
    for number, (digit, image) in enumerate(digit_images(digits, per_class)):
        path = images / f"{number:04d}.png"
        image.save(path)
        entry = (path, digits.index(digit))
        (val if seen[digit] < val_per_class else train).append(entry)
        seen[digit] += 1
    classes = Classes(tuple(DIGIT_NAMES[digit] for digit in digits))
    return write_lists_and_manifest(root / "lists", train, val, classes)
