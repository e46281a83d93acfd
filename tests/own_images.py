"""A real multi-class image dataset that an installed package ships, written in the layouts
`bitmoji prepare` reads: scikit-learn's handwritten digits (UCI, 8x8 greyscale, 1797 images,
10 classes; no download). Digits are small: the decode scales them up to the recipe's size."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digit_images(classes: tuple[int, ...] = (0, 1, 2), per_class: int = 40) -> list[tuple[int, Image.Image]]:
    """(digit, greyscale image) pairs, the first `per_class` of each digit in `classes`, in the
    dataset's order; pixel values 0..16 stretched to 0..255 (ink is white on black)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    taken: dict[int, int] = {}
    pairs = []
    for image, target in zip(digits.images, digits.target, strict=True):
        target = int(target)
        if target in classes and taken.get(target, 0) < per_class:
            taken[target] = taken.get(target, 0) + 1
            pixels = np.clip(image * 16, 0, 255).astype(np.uint8)
            pairs.append((target, Image.fromarray(pixels, mode="L")))
    return pairs


def write_digit_folders(
    root: Path, classes: tuple[int, ...] = (0, 1, 2), per_class: int = 40, extension: str = "png"
) -> Path:
    """One folder per class (`root/<digit name>/<n>.<extension>`); returns `root`."""
    for number, (digit, image) in enumerate(digit_images(classes, per_class)):
        folder = root / DIGIT_NAMES[digit]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{number:04d}.{extension}")
    return root


def write_digit_csv(
    root: Path,
    classes: tuple[int, ...] = (0, 1, 2),
    per_class: int = 40,
    label_as: str = "name",
    image_column: str = "file",
    label_column: str = "digit",
) -> Path:
    """The CSV layout: `root/images/<n>.png` and `root/labels.csv` (`image_column`,
    `label_column`); labels are class names (`label_as="name"`) or integers ("int"). Returns the
    CSV's path."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, (digit, image) in enumerate(digit_images(classes, per_class)):
        name = f"{number:04d}.png"
        image.save(images / name)
        rows.append({image_column: name, label_column: DIGIT_NAMES[digit] if label_as == "name" else digit})
    path = root / "labels.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[image_column, label_column])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_unlabelled(folder: Path, count: int = 6, digits: tuple[int, ...] = (3, 4)) -> Path:
    """Digits of classes the labelled sets do not use, as unlabelled images (`folder/<n>.png`,
    some in a sub-folder); returns `folder`."""
    for number, (_, image) in enumerate(digit_images(digits, per_class=count)[:count]):
        target = folder / ("more" if number % 2 else ".") / f"u{number:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)
    return folder
