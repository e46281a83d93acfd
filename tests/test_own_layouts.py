"""`bitmoji prepare` on one's own images: scikit-learn's handwritten digits (a real multi-class
dataset an installed package ships) in the folder layout and the CSV layout, then the edge cases
and the bad input, each refused with an error naming the file or value and nothing written."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from own_images import write_digit_csv, write_digit_folders, write_unlabelled
from PIL import Image
from typer.testing import CliRunner

import cli
from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.dataset import Sample
from bitmoji_ml.data.lists import MANIFEST, read_list, split_samples
from bitmoji_ml.errors import BitmojiError

runner = CliRunner()
THREE = ["one", "two", "zero"]  # DIGIT_NAMES of 0, 1, 2, sorted


def prepare(*args: object):
    return runner.invoke(cli.app, ["prepare", *map(str, args)])


def manifest_of(lists: Path) -> dict:
    return json.loads((lists / MANIFEST).read_text())


@pytest.fixture(scope="module")
def digit_folders(tmp_path_factory) -> Path:
    return write_digit_folders(tmp_path_factory.mktemp("folders") / "digits", per_class=20)


@pytest.fixture
def folders(digit_folders: Path, tmp_path: Path) -> Path:
    """A private copy of the folder layout, free to break."""
    return Path(shutil.copytree(digit_folders, tmp_path / "digits"))


# --------------------------------------------------------------------------------------------
# The folder layout


def test_folder_layout_is_detected_and_listed(digit_folders: Path, tmp_path: Path):
    lists = tmp_path / "lists"
    result = prepare("--data-dir", digit_folders, "--lists", lists)
    assert result.exit_code == 0, result.output
    manifest = manifest_of(lists)
    assert manifest["layout"] == "folders"
    assert Classes.from_dict(manifest["classes"]) == Classes(tuple(THREE))
    assert manifest["counts"] == {"train": 48, "val": 12, "test": 0}
    for split, size in (("train", 16), ("val", 4)):
        assert manifest["class_balance"][split] == {"images": size * 3, "counts": dict.fromkeys(THREE, size)}
    assert sorted(path.name for path in lists.iterdir()) == ["manifest.json", "train.txt", "val.txt"]
    # Each listed index is the class of the folder the image is in; paths are absolute.
    entries = read_list(lists / "train.txt") + read_list(lists / "val.txt")
    assert len(entries) == 60
    for path, index in entries:
        assert path.is_absolute() and path.parent.name == THREE[index]
    # The printed table: one row per class and split, then the total; no test list.
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert rows["zero"] == ["zero", "16", "4", "20", "33.3%"]
    assert rows["all"] == ["all", "48", "12", "60", "100.0%"]
    assert "folders layout, 3 classes" in result.stdout
    assert "no unlabelled folder" in result.stdout


def test_classes_flag_orders_the_classes(digit_folders: Path, tmp_path: Path):
    lists = tmp_path / "lists"
    result = prepare("--data-dir", digit_folders, "--lists", lists, "--classes", "zero, one,two")
    assert result.exit_code == 0, result.output
    assert manifest_of(lists)["classes"]["names"] == ["zero", "one", "two"]
    for path, index in read_list(lists / "val.txt"):
        assert path.parent.name == ["zero", "one", "two"][index]


def test_equal_file_names_in_two_class_folders_are_two_images(tmp_path: Path):
    root = tmp_path / "pets"
    for name, shade in (("cat", 40), ("dog", 200)):
        for number in range(3):
            (root / name / "sub").mkdir(parents=True, exist_ok=True)
            Image.new("L", (10, 10), shade).save(root / name / "sub" / f"{number}.png")
    lists = tmp_path / "lists"
    result = prepare("--data-dir", root, "--lists", lists, "--val-fraction", "0.34")
    assert result.exit_code == 0, result.output
    listed = sorted(
        str(path.relative_to(root))
        for path, _ in read_list(lists / "train.txt") + read_list(lists / "val.txt")
    )
    assert listed == sorted(f"{name}/sub/{n}.png" for name in ("cat", "dog") for n in range(3))


def test_unlabelled_folder_becomes_the_test_list(folders: Path, tmp_path: Path):
    unlabelled = write_unlabelled(folders / "to_predict")  # inside the data folder: not a class
    lists = tmp_path / "lists"
    result = prepare("--data-dir", folders, "--lists", lists, "--unlabelled", unlabelled)
    assert result.exit_code == 0, result.output
    manifest = manifest_of(lists)
    assert manifest["classes"]["names"] == THREE
    test = [path for path, _ in read_list(lists / "test.txt", labelled=False)]
    assert len(test) == manifest["counts"]["test"] == 6
    assert all(path.is_absolute() and unlabelled.resolve() in path.parents for path in test)
    assert manifest["unlabelled_dir"] == str(unlabelled.resolve())
    assert "test (unlabelled): 6 images" in result.stdout


# --------------------------------------------------------------------------------------------
# The CSV layout


def test_csv_layout_with_named_labels(tmp_path: Path):
    labels = write_digit_csv(tmp_path / "data", per_class=10)
    lists = tmp_path / "lists"
    images = labels.parent / "images"  # the CSV names the files relative to it
    options = ["--labels", labels, "--image-column", "file", "--label-column", "digit"]
    result = prepare(*options, "--data-dir", images, "--lists", lists)
    assert result.exit_code == 0, result.output
    manifest = manifest_of(lists)
    assert (manifest["layout"], manifest["classes"]["names"]) == ("csv", THREE)
    assert manifest["csv_sha256"] == hashlib.sha256(labels.read_bytes()).hexdigest()
    assert manifest["labels_file"] == str(labels.resolve())
    with open(labels, newline="") as handle:
        truth = {row["file"]: row["digit"] for row in csv.DictReader(handle)}
    for path, index in read_list(lists / "train.txt") + read_list(lists / "val.txt"):
        assert truth[path.relative_to(images).as_posix()] == THREE[index]


def test_integer_labels_sort_numerically(tmp_path: Path):
    root = tmp_path / "data"
    root.mkdir()
    rows = []
    for number, label in enumerate(["10", "2", "1", "02"] * 3):  # 02 is 2
        Image.new("L", (8, 8), number * 10).save(root / f"{number}.png")
        rows.append(f"{number}.png,{label}\n")
    (root / "labels.csv").write_text("image,label\n" + "".join(rows))
    lists = tmp_path / "lists"
    # Without --data-dir the images are relative to the CSV's folder.
    result = prepare("--labels", root / "labels.csv", "--lists", lists, "--val-fraction", "0.25")
    assert result.exit_code == 0, result.output
    assert manifest_of(lists)["classes"]["names"] == ["1", "2", "10"]
    assert manifest_of(lists)["data_dir"] == str(root.resolve())


def test_the_digest_follows_the_labels(tmp_path: Path):
    labels = write_digit_csv(tmp_path / "data", per_class=10, label_as="int")
    options = ["--labels", labels, "--image-column", "file", "--label-column", "digit"]
    options += ["--data-dir", labels.parent / "images"]
    assert prepare(*options, "--lists", tmp_path / "a").exit_code == 0
    digest = manifest_of(tmp_path / "a")["digest"]
    # The same labels under other names: the same images and indices, another dataset.
    text = labels.read_text()
    labels.write_text(text.replace(",0\n", ",nought\n").replace(",1\n", ",one\n").replace(",2\n", ",two\n"))
    result = prepare(*options, "--lists", tmp_path / "b", "--classes", "nought,one,two")
    assert result.exit_code == 0, result.output
    assert manifest_of(tmp_path / "b")["digest"] != digest
    assert manifest_of(tmp_path / "b")["csv_sha256"] != manifest_of(tmp_path / "a")["csv_sha256"]
    # Re-preparing unchanged data gives the same digest.
    labels.write_text(text)
    assert prepare(*options, "--lists", tmp_path / "c").exit_code == 0
    assert manifest_of(tmp_path / "c")["digest"] == digest


# --------------------------------------------------------------------------------------------
# Class imbalance


def test_a_rare_class_gets_a_validation_image_and_imbalance_is_said(tmp_path: Path):
    root = write_digit_folders(tmp_path / "digits", classes=(0, 1), per_class=30)
    write_digit_folders(tmp_path / "rare", classes=(2,), per_class=2)
    shutil.copytree(tmp_path / "rare" / "two", root / "two")
    lists = tmp_path / "lists"
    result = prepare("--data-dir", root, "--lists", lists, "--val-fraction", "0.1")
    assert result.exit_code == 0, result.output
    balance = manifest_of(lists)["class_balance"]
    assert balance["val"]["counts"]["two"] == 1 and balance["train"]["counts"]["two"] == 1
    assert balance["val"]["images"] == round(62 * 0.1)  # still the fraction asked for
    assert "imbalanced: the largest class has 15.0x the images of the smallest" in result.stdout


def samples_of(sizes: list[int]) -> list[Sample]:
    return [
        Sample(f"{label}/{number}", Path(f"/x/{label}/{number}.png"), label)
        for label, size in enumerate(sizes)
        for number in range(size)
    ]


@pytest.mark.parametrize(
    ("sizes", "fraction"), [([50, 50, 2], 0.1), ([100, 3, 2, 2], 0.05), ([2, 2], 0.5), ([9, 9, 2], 0.2)]
)
def test_every_class_keeps_an_image_on_each_side(sizes, fraction):
    train, val = split_samples(samples_of(sizes), fraction, seed=0)
    assert len(val) == round(sum(sizes) * fraction)
    for label in range(len(sizes)):
        assert any(s.label == label for s in train) and any(s.label == label for s in val), label


@pytest.mark.parametrize(
    ("sizes", "fraction", "fragment"),
    [
        ([20, 20, 1], 0.2, "'c' have a single image"),
        ([20, 2, 2], 0.05, "cannot hold one of each of the 3 classes"),
        ([2, 2, 2], 0.6, "leave a class without a training image"),
    ],
)
def test_a_split_that_cannot_hold_every_class_is_refused(sizes, fraction, fragment):
    with pytest.raises(BitmojiError, match=fragment):
        split_samples(samples_of(sizes), fraction, seed=0, classes=Classes(("a", "b", "c")))


def test_a_list_beside_a_manifest_refuses_an_index_past_its_classes(digit_folders: Path, tmp_path: Path):
    lists = tmp_path / "lists"
    assert prepare("--data-dir", digit_folders, "--lists", lists).exit_code == 0
    manifest = manifest_of(lists)
    manifest["classes"]["names"] = ["one", "two"]  # a manifest that says two classes
    (lists / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BitmojiError, match=r"expected `<image path> <0\.\.1>`"):
        read_list(lists / "train.txt")


# --------------------------------------------------------------------------------------------
# Bad input: a clear error naming the file or value, and the lists folder untouched


def one_class_only(root: Path) -> tuple[list, list[str]]:
    for name in ("one", "two"):
        shutil.rmtree(root / name)
    return [], ["only 'zero'", "two or more classes"]


def class_folder_without_images(root: Path) -> tuple[list, list[str]]:
    (root / "three").mkdir()
    (root / "three" / "notes.txt").write_text("to do")
    return [], ["three/", "no images"]


def class_name_not_a_column_name(root: Path) -> tuple[list, list[str]]:
    (root / "zero").rename(root / "zéro naught")
    return [], ["'zéro naught'", "cannot name an output column"]


def unreadable_image(root: Path) -> tuple[list, list[str]]:
    (root / "two" / "9999.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return [], ["two/9999.png", "unusable"]


def images_outside_class_folders(root: Path) -> tuple[list, list[str]]:
    Image.new("L", (8, 8)).save(root / "stray.png")
    return [], ["stray.png", "no class folder"]


def classes_flag_missing_a_folder(root: Path) -> tuple[list, list[str]]:
    return ["--classes", "zero,one"], ["'two'", "not in --classes"]


def classes_flag_naming_an_absent_class(root: Path) -> tuple[list, list[str]]:
    return ["--classes", "zero,one,two,nine"], ["'nine'", "no images"]


def csv_layout(root: Path, rows: list[list[str]], header=("image", "label")) -> list:
    images = root / "images"
    images.mkdir()
    for number in range(4):
        Image.new("L", (8, 8), number * 50).save(images / f"{number}.png")
    with open(root / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([list(header), *rows])
    return ["--labels", root / "labels.csv", "--data-dir", root]


GOOD_ROWS = [
    ["images/0.png", "cat"],
    ["images/1.png", "cat"],
    ["images/2.png", "dog"],
    ["images/3.png", "dog"],
]


def csv_names_a_missing_file(root: Path) -> tuple[list, list[str]]:
    return csv_layout(root, [*GOOD_ROWS, ["images/gone.png", "dog"]]), [
        "line 6: images/gone.png",
        "not found",
    ]


def csv_unknown_column(root: Path) -> tuple[list, list[str]]:
    options = csv_layout(root, GOOD_ROWS, header=("path", "label"))
    return options, ["no column(s) 'image'", "has: path, label", "--image-column"]


def csv_unknown_label_column_flag(root: Path) -> tuple[list, list[str]]:
    return [*csv_layout(root, GOOD_ROWS), "--label-column", "species"], ["'species'"]


def csv_duplicate_file(root: Path) -> tuple[list, list[str]]:
    rows = [*GOOD_ROWS, ["./images/1.png", "dog"]]
    return csv_layout(root, rows), ["listed twice", "line 6: ./images/1.png (also line 3)"]


def csv_label_with_a_comma(root: Path) -> tuple[list, list[str]]:
    rows = [*GOOD_ROWS[:2], ["images/2.png", "dog,wolf"], ["images/3.png", "dog,wolf"]]
    return csv_layout(root, rows), ["'dog,wolf'", "cannot name an output column"]


def csv_non_ascii_label(root: Path) -> tuple[list, list[str]]:
    rows = [*GOOD_ROWS[:2], ["images/2.png", "chien🐕"], ["images/3.png", "chien🐕"]]
    return csv_layout(root, rows), ["'chien🐕'", "cannot name an output column"]


def csv_one_label_only(root: Path) -> tuple[list, list[str]]:
    return csv_layout(root, [[image, "cat"] for image, _ in GOOD_ROWS]), ["only 'cat'"]


def csv_image_outside_the_folder(root: Path) -> tuple[list, list[str]]:
    return csv_layout(root, [*GOOD_ROWS, ["../elsewhere.png", "dog"]]), ["outside", "../elsewhere.png"]


def csv_blank_label(root: Path) -> tuple[list, list[str]]:
    return csv_layout(root, [*GOOD_ROWS, ["images/0.png", ""]]), ["blank", "line 6"]


def unlabelled_folder_holding_labelled_images(root: Path) -> tuple[list, list[str]]:
    return ["--unlabelled", root], ["of --unlabelled", "are labelled images", "one/0001.png"]


def flags_of_another_layout(root: Path) -> tuple[list, list[str]]:
    return ["--image-column", "file"], ["--image-column", "folders layout"]


def nothing_prepare_reads(root: Path) -> tuple[list, list[str]]:
    shutil.rmtree(root)
    root.mkdir()
    (root / "README.txt").write_text("empty")
    return [], ["none of the layouts", "--layout", "--labels"]


BREAKERS = [
    one_class_only,
    class_folder_without_images,
    class_name_not_a_column_name,
    unreadable_image,
    images_outside_class_folders,
    classes_flag_missing_a_folder,
    classes_flag_naming_an_absent_class,
    csv_names_a_missing_file,
    csv_unknown_column,
    csv_unknown_label_column_flag,
    csv_duplicate_file,
    csv_label_with_a_comma,
    csv_non_ascii_label,
    csv_one_label_only,
    csv_image_outside_the_folder,
    csv_blank_label,
    unlabelled_folder_holding_labelled_images,
    flags_of_another_layout,
    nothing_prepare_reads,
]


@pytest.mark.parametrize("breaker", BREAKERS, ids=[b.__name__ for b in BREAKERS])
def test_bad_input_is_named_and_nothing_is_written(folders: Path, tmp_path: Path, breaker):
    lists = tmp_path / "lists"
    assert prepare("--data-dir", folders, "--lists", lists).exit_code == 0
    before = {path.name: path.read_bytes() for path in lists.iterdir()}
    if breaker.__name__.startswith("csv_"):
        shutil.rmtree(folders)
        folders.mkdir()
    options, fragments = breaker(folders)
    result = prepare("--data-dir", folders, "--lists", lists, "--seed", 5, *options)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert {path.name: path.read_bytes() for path in lists.iterdir()} == before


def test_unknown_layout_and_kaggle_only_flags(tiny_dataset: Path, tmp_path: Path):
    result = prepare("--data-dir", tiny_dataset, "--lists", tmp_path / "a", "--layout", "coco")
    assert result.exit_code == 1 and "unknown layout 'coco'" in result.stderr
    result = prepare("--data-dir", tiny_dataset, "--lists", tmp_path / "b", "--classes", "a,b")
    assert result.exit_code == 1 and "--classes" in result.stderr and "female and male" in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_exclude_names_own_images_by_path_or_unique_file_name(folders: Path, tmp_path: Path):
    first = {name: sorted((folders / name).iterdir())[0] for name in THREE}
    first["one"].rename(folders / "one" / "twin.png")
    first["two"].rename(folders / "two" / "twin.png")
    by_path, by_name = f"zero/{first['zero'].name}", sorted((folders / "one").iterdir())[0].name
    exclude = tmp_path / "wrong.csv"
    exclude.write_text(f"image_id\n{by_path}\n{by_name}\n")  # a path, and a file name held once
    lists = tmp_path / "lists"
    result = prepare("--data-dir", folders, "--lists", lists, "--exclude", exclude)
    assert result.exit_code == 0, result.output
    entries = read_list(lists / "train.txt") + read_list(lists / "val.txt")
    listed = {path.relative_to(folders.resolve()).as_posix() for path, _ in entries}
    assert len(listed) == 58 and not {by_path, f"one/{by_name}"} & listed
    exclude.write_text("image_id\ntwin.png\n")  # two images have this name: which one?
    result = prepare("--data-dir", folders, "--lists", tmp_path / "other", "--exclude", exclude)
    assert result.exit_code == 1 and "twin.png (one/twin.png, two/twin.png)" in result.stderr
    assert not (tmp_path / "other").exists()


def test_exclude_that_empties_a_class_on_one_side_is_refused(folders: Path, tmp_path: Path):
    lists = tmp_path / "lists"
    assert prepare("--data-dir", folders, "--lists", lists).exit_code == 0
    val_zeros = [path for path, index in read_list(lists / "val.txt") if index == THREE.index("zero")]
    exclude = tmp_path / "wrong.csv"
    exclude.write_text("image_id\n" + "".join(f"zero/{path.name}\n" for path in val_zeros))
    before = {path.name: path.read_bytes() for path in lists.iterdir()}
    result = prepare("--data-dir", folders, "--lists", lists, "--exclude", exclude)
    assert result.exit_code == 1 and "leaves no validation image of 'zero'" in result.stderr
    assert {path.name: path.read_bytes() for path in lists.iterdir()} == before


def test_own_layout_digest_ignores_where_the_data_lives(digit_folders: Path, tmp_path: Path):
    moved = Path(shutil.copytree(digit_folders, tmp_path / "elsewhere" / "digits"))
    assert prepare("--data-dir", digit_folders, "--lists", tmp_path / "a").exit_code == 0
    assert prepare("--data-dir", moved, "--lists", tmp_path / "b").exit_code == 0
    first, second = manifest_of(tmp_path / "a"), manifest_of(tmp_path / "b")
    assert first["digest"] == second["digest"]
    assert first["files"]["train.txt"] != second["files"]["train.txt"]  # absolute paths differ
    # A renamed class folder is another dataset, even with the same images and indices.
    (moved / "zero").rename(moved / "zz")
    assert prepare("--data-dir", moved, "--lists", tmp_path / "c").exit_code == 0
    assert manifest_of(tmp_path / "c")["digest"] != first["digest"]


def test_head_split_of_class_sorted_folders_is_refused(digit_folders: Path, tmp_path: Path):
    """The folder layout lists the images class by class: the head split would validate on the
    last class only."""
    result = prepare("--data-dir", digit_folders, "--lists", tmp_path / "lists", "--split", "head")
    assert result.exit_code == 1
    assert (
        "the head split leaves no validation image of 'one', 'two'; use --split stratified" in result.stderr
    )
    assert not (tmp_path / "lists").exists()
