"""Library-level tests of the data layer: labels, train.csv parsing, splits, lists, image
decoding and where the dataset folder is looked for."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bitmoji_ml.data.images as images
from bitmoji_ml import files, paths
from bitmoji_ml.data.classes import BITMOJI
from bitmoji_ml.data.dataset import (
    KAGGLE_VALUES,
    TEST_IMAGES,
    TRAIN_CSV,
    TRAIN_IMAGES,
    Dataset,
    list_images,
    load_dataset,
    read_labels,
)
from bitmoji_ml.data.images import ImageError, Preprocess, check_image, decode_image
from bitmoji_ml.data.lists import (
    LIST_FILES,
    MANIFEST,
    read_list,
    read_manifest,
    split_samples,
    write_lists,
)
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import write_text_atomic

# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def real_csv_rows(real_data: Path) -> list[dict[str, str]]:
    """The real train.csv, read independently of the library (the oracle for the tests)."""
    with open(real_data / TRAIN_CSV, newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def real_dataset(real_data: Path) -> Dataset:
    """The real dataset's labels and test list, without decoding 4084 images (that is covered
    once, through the CLI, in test_cli_prepare.py)."""
    root = real_data
    train = read_labels(root / TRAIN_CSV, root / TRAIN_IMAGES)
    return Dataset(root=root, train=train, test=list_images(root / TEST_IMAGES))


def write_csv(path: Path, header: list[str], rows: list[list[object]], bom: bool = False) -> Path:
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def ids(samples) -> list[str]:
    return [sample.image_id for sample in samples]


def male_count(samples) -> int:
    return sum(sample.label for sample in samples)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Labels


def test_kaggle_values_map_to_bitmoji_class_indices():
    assert BITMOJI.names[KAGGLE_VALUES[1]] == "male"
    assert BITMOJI.names[KAGGLE_VALUES[-1]] == "female"
    # ... and back through the one decision rule: Kaggle's 1 / -1 from a class index.
    for value, index in KAGGLE_VALUES.items():
        probabilities = np.eye(2)[[index]]
        assert BITMOJI.labels(probabilities) == [value]


# --------------------------------------------------------------------------------------------
# read_labels


def test_read_labels_parses_a_good_csv(tmp_path: Path):
    csv_path = write_csv(
        tmp_path / "train.csv",
        ["image_id", "is_male", "left_eye_x"],
        [["a.jpg", 1, 3], ["b.jpg", -1, 4], [" c.jpg ", " 1 ", 5], ["d.jpg", "-1.0", 6]],
        bom=True,  # Excel writes one; the header must still be found
    )
    samples = read_labels(csv_path, tmp_path / "imgs")
    assert ids(samples) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert [sample.label for sample in samples] == [1, 0, 1, 0]
    assert [sample.path for sample in samples] == [tmp_path / "imgs" / i for i in ids(samples)]


def test_read_labels_on_the_real_csv(real_csv_rows, real_dataset):
    samples = real_dataset.train
    assert ids(samples) == [row["image_id"] for row in real_csv_rows]
    expected = [int(row["is_male"] == "1") for row in real_csv_rows]
    assert [sample.label for sample in samples] == expected
    assert all(sample.path.parent == real_dataset.root / TRAIN_IMAGES for sample in samples)


@pytest.mark.parametrize(
    ("header", "rows", "fragments"),
    [
        (["image_id", "label"], [["a.jpg", 1]], ["is_male"]),
        (["image_id", "is_male"], [["a.jpg", 1], ["b.jpg", 0]], ["line 3", "b.jpg", "'0'"]),
        (["image_id", "is_male"], [["a.jpg", 2], ["b.jpg", 1]], ["line 2", "a.jpg", "'2'"]),
        (["image_id", "is_male"], [["a.jpg", "x"]], ["line 2", "'x'"]),
        (["image_id", "is_male"], [["a.jpg", "0.5"]], ["line 2", "'0.5'"]),
        (["image_id", "is_male"], [["a.jpg", 1], ["b.jpg", "inf"]], ["line 3", "'inf'"]),
        (
            ["image_id", "is_male"],
            [["a.jpg", 1], ["b.jpg", -1], ["a.jpg", 1]],
            ["duplicate", "line 4"],
        ),
        (["image_id", "is_male"], [], ["no rows"]),
    ],
    ids=[
        "no-is_male",
        "label-0",
        "label-2",
        "label-text",
        "label-fraction",
        "label-inf",
        "duplicate",
        "empty",
    ],
)
def test_read_labels_rejects_bad_csv(tmp_path: Path, header, rows, fragments):
    csv_path = write_csv(tmp_path / "train.csv", header, rows)
    with pytest.raises(BitmojiError) as caught:
        read_labels(csv_path, tmp_path)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_read_labels_missing_file_mentions_train_csv(tmp_path: Path):
    with pytest.raises(BitmojiError, match="train.csv"):
        read_labels(tmp_path / "train.csv", tmp_path)


# --------------------------------------------------------------------------------------------
# split_samples


def test_stratified_split_sizes_and_balance(real_dataset):
    samples = real_dataset.train
    train, val = split_samples(samples, 0.2, seed=0)
    n_val = round(len(samples) * 0.2)
    assert (len(train), len(val)) == (len(samples) - n_val, n_val) == (2400, 600)
    for label in (0, 1):
        total = sum(1 for sample in samples if sample.label == label)
        in_val = sum(1 for sample in val if sample.label == label)
        assert abs(in_val - 0.2 * total) <= 1, (label, in_val, total)


def test_split_is_a_partition(real_dataset):
    samples = real_dataset.train
    train, val = split_samples(samples, 0.2, seed=0)
    assert not set(ids(train)) & set(ids(val))
    assert Counter(ids(train) + ids(val)) == Counter(ids(samples))
    # Each sample keeps its own label and path.
    assert set(train) | set(val) == set(samples)


def test_split_is_deterministic_per_seed(real_dataset):
    samples = real_dataset.train
    first = split_samples(samples, 0.2, seed=0)
    again = split_samples(list(samples), 0.2, seed=0)
    other = split_samples(samples, 0.2, seed=1)
    assert ids(first[0]) == ids(again[0]) and ids(first[1]) == ids(again[1])
    assert set(ids(first[1])) != set(ids(other[1]))
    assert len(other[1]) == len(first[1])


def test_head_split_takes_the_first_rows(real_dataset, real_csv_rows):
    train, val = split_samples(real_dataset.train, 0.2, seed=123, method="head")
    csv_ids = [row["image_id"] for row in real_csv_rows]
    assert ids(train) == csv_ids[:2400]
    assert ids(val) == csv_ids[2400:]
    # The seed plays no part in the head split.
    assert ids(split_samples(real_dataset.train, 0.2, seed=0, method="head")[1]) == ids(val)


@pytest.mark.parametrize(
    ("fraction", "method", "count"),
    [
        (0.0, "stratified", 10),
        (1.0, "stratified", 10),
        (-0.1, "head", 10),
        (0.2, "random", 10),
        (0.01, "stratified", 10),
        (0.99, "head", 10),
    ],
)
def test_split_rejects_bad_arguments(real_dataset, fraction, method, count):
    with pytest.raises(BitmojiError):
        split_samples(real_dataset.train[:count], fraction, seed=0, method=method)


# --------------------------------------------------------------------------------------------
# write_lists / read_list


@pytest.fixture(scope="module")
def real_lists(real_dataset, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("real-lists") / "lists"
    return out, write_lists(real_dataset, out, val_fraction=0.2, seed=0)


def test_write_lists_writes_four_files_and_a_consistent_manifest(real_lists, real_dataset):
    out, manifest = real_lists
    names = sorted([*LIST_FILES.values(), MANIFEST])
    assert sorted(path.name for path in out.iterdir()) == names
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert manifest["counts"] == {"train": 2400, "val": 600, "test": len(real_dataset.test)}
    assert manifest["counts"]["test"] == len(list((real_dataset.root / TEST_IMAGES).glob("*.jpg")))
    for split in ("train", "val"):
        balance = manifest["class_balance"][split]
        assert sorted(balance["counts"]) == ["female", "male"]
        assert sum(balance["counts"].values()) == balance["images"] == manifest["counts"][split]
    total_male = male_count(real_dataset.train)
    balance = manifest["class_balance"]
    assert balance["train"]["counts"]["male"] + balance["val"]["counts"]["male"] == total_male
    assert (manifest["layout"], manifest["classes"]) == (
        "kaggle",
        {"names": ["female", "male"], "kaggle": True},
    )
    # Per-file digests are of the bytes on disk; csv digest is of train.csv.
    for name in LIST_FILES.values():
        assert manifest["files"][name] == sha256(out / name)
    assert manifest["csv_sha256"] == sha256(real_dataset.root / TRAIN_CSV)
    assert manifest["data_dir"] == str(real_dataset.root)
    assert (manifest["split"], manifest["seed"], manifest["val_fraction"]) == ("stratified", 0, 0.2)
    # The portable digest is over ids + labels only, recomputed here independently.
    train, val = split_samples(real_dataset.train, 0.2, seed=0)
    portable = "".join(f"train:{s.image_id} {s.label}\n" for s in train)
    portable += "".join(f"val:{s.image_id} {s.label}\n" for s in val)
    portable += "".join(f"test:{p.name}\n" for p in real_dataset.test)
    # The digest of the published dataset at seed 0, as round 1 wrote it: the split, ids and
    # labels of Bitmoji did not move when other layouts and N classes came.
    assert manifest["digest"] == "48300dcabb585a8e2c2398e3e56d372c8f72d9bfc28a040f9f46cff0a25043cf"
    assert manifest["digest"] == hashlib.sha256(portable.encode()).hexdigest()


def test_write_lists_is_byte_identical_on_a_second_run(real_lists, real_dataset, tmp_path):
    out, manifest = real_lists
    again = write_lists(real_dataset, tmp_path / "again", val_fraction=0.2, seed=0)
    assert again == manifest
    for name in [*LIST_FILES.values(), MANIFEST]:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    other = write_lists(real_dataset, tmp_path / "seed1", val_fraction=0.2, seed=1)
    assert other["digest"] != manifest["digest"]
    assert (tmp_path / "seed1" / "val.txt").read_bytes() != (out / "val.txt").read_bytes()


def test_lists_parse_back(real_lists, real_dataset):
    out, _ = real_lists
    train, val = split_samples(real_dataset.train, 0.2, seed=0)
    assert read_list(out / "train.txt") == [(s.path, s.label) for s in train]
    assert read_list(out / "val.txt", labelled=True) == [(s.path, s.label) for s in val]
    assert read_list(out / "test.txt", labelled=False) == [(p, -1) for p in real_dataset.test]
    assert all(path.is_absolute() for path, _ in read_list(out / "test.txt", labelled=False))
    # A test list has no labels, so reading it as labelled is an error, not garbage.
    with pytest.raises(BitmojiError, match="test.txt:1"):
        read_list(out / "test.txt")


def test_read_list_errors(tmp_path: Path):
    with pytest.raises(BitmojiError, match="prepare"):
        read_list(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(BitmojiError, match="empty"):
        read_list(tmp_path / "empty.txt")
    for bad in ("x", "-1", "1.0", "", "٣"):  # ٣: an Arabic-Indic three, a digit to str.isdigit
        (tmp_path / "bad.txt").write_text(f"/x/a.jpg 1\n/x/b.jpg {bad}\n")
        with pytest.raises(BitmojiError, match="bad.txt:2"):
            read_list(tmp_path / "bad.txt")
    # Without a manifest beside it (a list of one's own) any class index is taken.
    (tmp_path / "three.txt").write_text("/x/a.jpg 2\n")
    assert read_list(tmp_path / "three.txt") == [(Path("/x/a.jpg"), 2)]
    # Paths with spaces survive: the label is after the last space.
    (tmp_path / "spaces.txt").write_text("/x/my pics/a.jpg 0\n")
    assert read_list(tmp_path / "spaces.txt") == [(Path("/x/my pics/a.jpg"), 0)]


def test_digest_ignores_where_the_data_lives(tiny_dataset: Path, tmp_path: Path):
    moved = Path(shutil.copytree(tiny_dataset, tmp_path / "elsewhere" / "bitmoji"))
    first = write_lists(load_dataset(tiny_dataset), tmp_path / "a")
    second = write_lists(load_dataset(moved), tmp_path / "b")
    assert first["data_dir"] != second["data_dir"]
    assert first["digest"] == second["digest"]
    assert first["files"] != second["files"]  # the lists hold absolute paths


def test_failed_atomic_write_leaves_no_file(tmp_path: Path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", broken_fsync)
    target = tmp_path / "out" / "train.txt"
    with pytest.raises(BitmojiError, match="No space left"):
        write_text_atomic(target, "data\n")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left behind either


def test_failed_swap_keeps_the_whole_old_set(tiny_dataset: Path, tmp_path: Path, monkeypatch):
    """Re-running prepare with another seed, the second rename fails: train.txt, val.txt,
    test.txt and the manifest must all still be the old set (file-by-file renames left a new
    train.txt beside the old val.txt, so validation images were also training images)."""
    dataset = load_dataset(tiny_dataset)
    out = tmp_path / "lists"
    write_lists(dataset, out, seed=0)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    # The seed-1 lists differ, so an overwrite of either list would show.
    write_lists(dataset, tmp_path / "seed1", seed=1)
    for name in ("train.txt", "val.txt"):
        assert (tmp_path / "seed1" / name).read_bytes() != before[name]

    real_replace = files.os.replace
    calls = []

    def replace_failing_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace_failing_second)
    with pytest.raises(BitmojiError, match="Input/output error"):
        write_lists(dataset, out, seed=1)
    monkeypatch.undo()
    assert len(calls) >= 2
    after = {path.name: path.read_bytes() for path in out.iterdir()}
    assert after == before  # train.txt, val.txt, test.txt and manifest.json: the old set
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bitmoji", "lists", "seed1"]
    assert read_manifest(out)["seed"] == 0  # and it still reads as one consistent set


def test_rewrite_swaps_the_folder_and_leaves_nothing_beside_it(tiny_dataset: Path, tmp_path: Path):
    dataset = load_dataset(tiny_dataset)
    out = tmp_path / "lists"
    write_lists(dataset, out, seed=0)
    write_lists(dataset, out, seed=1)
    write_lists(dataset, tmp_path / "seed1", seed=1)
    for name in [*LIST_FILES.values(), MANIFEST]:
        assert (out / name).read_bytes() == (tmp_path / "seed1" / name).read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bitmoji", "lists", "seed1"]


def test_write_lists_refuses_a_folder_holding_other_files(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.me").write_text("mine\n")
    with pytest.raises(BitmojiError, match="keep.me"):
        write_lists(load_dataset(tiny_dataset), out, seed=0)
    assert [path.name for path in out.iterdir()] == ["keep.me"]


def test_list_that_does_not_match_the_manifest_is_refused(tiny_dataset: Path, tmp_path: Path):
    """A val.txt from another prepare run beside this run's manifest: reading it must fail and
    say to re-run prepare, whether through read_list, read_manifest or load_list."""
    from bitmoji_ml.data.cache import load_list

    dataset = load_dataset(tiny_dataset)
    out = tmp_path / "lists"
    write_lists(dataset, out, seed=0)
    write_lists(dataset, tmp_path / "seed1", seed=1)
    shutil.copy(tmp_path / "seed1" / "val.txt", out / "val.txt")
    with pytest.raises(BitmojiError, match=r"val.txt does not match .*re-run `bitmoji prepare`"):
        read_list(out / "val.txt")
    with pytest.raises(BitmojiError, match="val.txt does not match"):
        read_manifest(out)
    with pytest.raises(BitmojiError, match="val.txt does not match"):
        load_list(out / "val.txt", Preprocess())
    assert len(read_list(out / "train.txt")) == 32  # the untouched lists still read
    # The same file outside a prepared folder is a list of one's own: accepted.
    assert len(read_list(tmp_path / "seed1" / "val.txt")) == 8
    (out / "train.txt").unlink()
    with pytest.raises(BitmojiError, match="train.txt .*not found: re-run `bitmoji prepare`"):
        read_manifest(out)


# --------------------------------------------------------------------------------------------
# decode_image

SMALL = Preprocess(size=16, resize=16)


def save(array: np.ndarray, path: Path, mode: str | None = None, **options) -> Path:
    image = Image.fromarray(array) if mode is None else Image.fromarray(array, mode)
    image.save(path, **options)
    return path


def assert_colour(pixel, expected, tolerance=12):
    assert np.all(np.abs(pixel.astype(int) - np.array(expected)) <= tolerance), (pixel, expected)


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        (Preprocess(), (64, 64, 3)),
        (Preprocess(size=32, resize=40), (32, 32, 3)),
        (SMALL, (16, 16, 3)),
    ],
)
@pytest.mark.parametrize("source", [(30, 60), (60, 30), (20, 20), (100, 100)])
def test_decode_shape_and_dtype(tmp_path: Path, spec, shape, source):
    rng = np.random.default_rng(0)
    path = save(rng.integers(0, 255, (*source, 3), dtype=np.uint8), tmp_path / "x.jpg")
    out = decode_image(path, spec)
    assert out.shape == shape
    assert out.dtype == np.uint8


def test_decode_centre_crops(tmp_path: Path):
    # 150 x 30: a red, green and blue band; the 16x16 crop of the 80x16 resize is all green.
    pixels = np.zeros((30, 150, 3), np.uint8)
    pixels[:, :50] = (255, 0, 0)
    pixels[:, 50:100] = (0, 255, 0)
    pixels[:, 100:] = (0, 0, 255)
    out = decode_image(save(pixels, tmp_path / "wide.png"), SMALL)
    assert out.shape == (16, 16, 3)
    for pixel in out.reshape(-1, 3):
        assert_colour(pixel, (0, 255, 0))


def test_decode_grayscale(tmp_path: Path):
    path = save(np.full((20, 20), 100, np.uint8), tmp_path / "gray.png", "L")
    assert Image.open(path).mode == "L"
    out = decode_image(path, SMALL)
    assert out.shape == (16, 16, 3)
    assert np.all(out == 100)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_decode_transparent_becomes_white(tmp_path: Path, mode):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, :10] = (0, 0, 0, 255)  # opaque black left half
    rgba[:, 10:] = (0, 0, 0, 0)  # fully transparent right half
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    image.save(tmp_path / "alpha.png")
    assert Image.open(tmp_path / "alpha.png").mode == mode
    out = decode_image(tmp_path / "alpha.png", SMALL)
    assert out.shape == (16, 16, 3)
    assert np.all(out[:, :7] == 0)
    assert np.all(out[:, 9:] == 255)


def test_decode_palette(tmp_path: Path):
    pixels = np.zeros((20, 20, 3), np.uint8)
    pixels[:10] = (200, 30, 40)
    pixels[10:] = (20, 40, 220)
    Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = decode_image(tmp_path / "p.png", SMALL)
    assert_colour(out[2, 8], (200, 30, 40))
    assert_colour(out[13, 8], (20, 40, 220))


def test_decode_palette_with_transparency(tmp_path: Path):
    image = Image.new("P", (20, 20), 0)
    image.putpalette([10, 20, 30, 250, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (0, 10, 20, 20))  # bottom half index 1 (red)
    image.save(tmp_path / "pt.png", transparency=0)  # index 0 (top half) transparent
    assert "transparency" in Image.open(tmp_path / "pt.png").info
    out = decode_image(tmp_path / "pt.png", SMALL)
    assert np.all(out[:7] == 255)
    assert_colour(out[13, 8], (250, 0, 0), tolerance=0)


def test_decode_16_bit_greyscale_png_scales_to_8_bits(tmp_path: Path):
    """A 16-bit PNG whose 8-bit version is known (v * 257): PIL's convert("RGB") clamped every
    value above 255 to white; decoding must give the 8-bit values back."""
    eight = np.tile(np.arange(0, 256, 16, dtype=np.uint16), (16, 1))  # 16 x 16, 0..240
    eight[0, 0] = 255
    path = tmp_path / "deep.png"
    Image.fromarray(eight * 257).save(path)
    with Image.open(path) as opened:
        assert opened.mode == "I;16"
    out = decode_image(path, SMALL)
    assert np.array_equal(out, np.repeat(eight[..., None], 3, axis=2).astype(np.uint8))
    # Values between two 8-bit levels round to the nearer one.
    Image.fromarray(np.full((16, 16), 32767 + 129, np.uint16)).save(path)  # 127.99 -> 128
    assert np.all(decode_image(path, SMALL) == 128)


def test_decode_16_bit_png_transparency_becomes_white(tmp_path: Path):
    pixels = np.full((16, 16), 40 * 257, np.uint16)
    pixels[:, 8:] = 1000  # the transparent value
    Image.fromarray(pixels).save(tmp_path / "deep.png", transparency=1000)
    out = decode_image(tmp_path / "deep.png", SMALL)
    assert np.all(out[:, :8] == 40)
    assert np.all(out[:, 8:] == 255)


def test_decode_cmyk_jpeg(tmp_path: Path):
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = decode_image(tmp_path / "cmyk.jpg", SMALL)
    assert out.shape == (16, 16, 3)
    assert_colour(out[8, 8], (255, 0, 0), tolerance=20)


@pytest.mark.parametrize(
    ("orientation", "top_right"), [(None, (0, 0, 255)), (1, (0, 0, 255)), (6, (255, 0, 0))]
)
def test_decode_applies_exif_orientation(tmp_path: Path, orientation, top_right):
    # 40 wide x 20 high: red left half, blue right half. Orientation 6 means "rotate 90 degrees
    # clockwise to display", which puts the left (red) half on top.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    path = save(pixels, tmp_path / "oriented.jpg", quality=95, exif=exif)
    out = decode_image(path, SMALL)
    assert_colour(out[1, 1], (255, 0, 0), tolerance=20)  # top left is red either way
    assert_colour(out[1, 14], top_right, tolerance=20)
    assert_colour(out[14, 14], (0, 0, 255), tolerance=20)  # bottom right is blue either way


def test_decode_refuses_too_many_pixels(tmp_path: Path, monkeypatch):
    path = save(np.zeros((20, 20, 3), np.uint8), tmp_path / "big.png")
    small = save(np.zeros((10, 10, 3), np.uint8), tmp_path / "small.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    assert decode_image(small, SMALL).shape == (16, 16, 3)  # 100 pixels: at the limit, allowed
    with pytest.raises(ImageError, match="big.png"):
        decode_image(path, SMALL)
    with pytest.raises(ImageError):
        check_image(path)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [7_000, 10_000])  # 49 MP (over our limit), 100 MP (over PIL's)
def test_decode_refuses_decompression_bomb_header(tmp_path: Path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(side, side))
    with pytest.raises(ImageError, match="bomb.png"):
        decode_image(path, SMALL)
    with pytest.raises(ImageError):
        check_image(path)


def broken_files(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    whole = save(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8), folder / "whole.jpg")
    data = whole.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("image_id,is_male\nnot an image\n")
    return {
        "truncated": folder / "truncated.jpg",
        "empty": folder / "empty.jpg",
        "text": folder / "text.jpg",
        "missing": folder / "missing.jpg",
        "whole": whole,
    }


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "missing"])
@pytest.mark.parametrize("spec", [SMALL, Preprocess(size=96, resize=128)])
def test_decode_broken_files_raise_image_error(tmp_path: Path, kind, spec):
    paths = broken_files(tmp_path)
    assert decode_image(paths["whole"], spec).shape == (spec.size, spec.size, 3)
    with pytest.raises(ImageError, match=f"{kind}.jpg"):
        decode_image(paths[kind], spec)
    with pytest.raises(ImageError, match=f"{kind}.jpg"):
        check_image(paths[kind])
    assert issubclass(ImageError, BitmojiError)


def test_preprocess_round_trips():
    spec = Preprocess(size=48, resize=56, filter="bicubic", mean=(0.5, 0.4, 0.3), std=(0.2, 0.1, 0.3))
    as_dict = spec.to_dict()
    assert Preprocess.from_dict(as_dict) == spec
    text = json.dumps(as_dict)  # the dict is JSON-able ...
    assert Preprocess.from_dict(text) == spec  # ... and the JSON string form is accepted
    assert Preprocess.from_dict(Preprocess().to_dict()) == Preprocess()
    assert as_dict["mean"] == [0.5, 0.4, 0.3] and as_dict["size"] == 48


@pytest.mark.parametrize(
    "kwargs", [{"filter": "nearest"}, {"size": 4, "resize": 4}, {"size": 80, "resize": 64}]
)
def test_preprocess_rejects_bad_settings(kwargs):
    with pytest.raises(BitmojiError):
        Preprocess(**kwargs)


# --------------------------------------------------------------------------------------------
# resolve_data_dir


@pytest.fixture
def data_places(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """An empty working directory, no $BITMOJI_DATA, and default folders that do not exist yet."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    places = {name: tmp_path / name for name in ("flag", "env", "shared", "local")}
    monkeypatch.setattr(paths, "SHARED_DATA", places["shared"])
    monkeypatch.setattr(paths, "LOCAL_DATA", places["local"])
    return places


def test_flag_beats_env_and_default(data_places, monkeypatch):
    for folder in data_places.values():
        folder.mkdir()
    monkeypatch.setenv(paths.DATA_ENV, str(data_places["env"]))
    assert paths.resolve_data_dir(data_places["flag"]) == data_places["flag"]
    assert paths.resolve_data_dir(str(data_places["flag"])) == data_places["flag"]


def test_env_beats_default(data_places, monkeypatch):
    for name in ("env", "shared", "local"):
        data_places[name].mkdir()
    monkeypatch.setenv(paths.DATA_ENV, str(data_places["env"]))
    assert paths.resolve_data_dir() == data_places["env"]


def test_default_prefers_shared_then_local(data_places, monkeypatch):
    data_places["local"].mkdir()
    assert paths.resolve_data_dir() == data_places["local"]
    data_places["shared"].mkdir()
    assert paths.resolve_data_dir() == data_places["shared"]
    monkeypatch.setenv(paths.DATA_ENV, "")  # an empty variable counts as unset
    assert paths.resolve_data_dir() == data_places["shared"]


def test_missing_flag_does_not_fall_back(data_places, monkeypatch):
    for name in ("env", "shared", "local"):
        data_places[name].mkdir()
    monkeypatch.setenv(paths.DATA_ENV, str(data_places["env"]))
    with pytest.raises(BitmojiError, match="--data-dir"):
        paths.resolve_data_dir(data_places["flag"])


def test_missing_env_does_not_fall_back(data_places, monkeypatch):
    data_places["shared"].mkdir()
    monkeypatch.setenv(paths.DATA_ENV, str(data_places["env"]))
    with pytest.raises(BitmojiError, match="BITMOJI_DATA"):
        paths.resolve_data_dir()


def test_nothing_found_explains_the_layout(data_places):
    with pytest.raises(BitmojiError) as caught:
        paths.resolve_data_dir()
    message = str(caught.value)
    assert "train.csv" in message
    assert str(data_places["shared"]) in message and str(data_places["local"]) in message
