"""oof_predictions.csv: Bitmoji's file exactly as before, one probability column per class
otherwise, the classes read back from the header, other files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitmoji_ml.data.classes import BITMOJI, Classes, predicted_indices
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.selection.oof import OutOfFold, image_folder, read_oof_csv, write_oof_csv

THREE = Classes(("cat", "dog", "fox"))


def test_a_bitmoji_file_has_the_columns_and_bytes_it_had(tmp_path: Path) -> None:
    prob_male = np.array([0.1, 0.95, 0.5], dtype=np.float32)
    oof = OutOfFold(
        ["/data/t/0001.jpg", "/data/t/0002.jpg", "/data/t/0003.jpg"],
        np.array([0, 1, 0]),
        np.stack([1 - prob_male, prob_male], axis=1),
        np.array([1, 2, 2]),
    )
    write_oof_csv(oof, tmp_path / "oof.csv", folder=Path("/data/t"))
    expected = "image,label,prob_male,fold\r\n0001.jpg,0,0.100000,1\r\n0002.jpg,1,0.950000,2\r\n0003.jpg,0,0.500000,2\r\n"
    assert (tmp_path / "oof.csv").read_bytes() == expected.encode()
    back = read_oof_csv(tmp_path / "oof.csv", folder=Path("/data/t"))
    assert back.classes == BITMOJI and back.images == oof.images
    assert np.allclose(back.probabilities, oof.probabilities, atol=1e-6)
    assert predicted_indices(back.probabilities).tolist() == [0, 1, 1]  # P(male) 0.5 is male, as always


def test_other_classes_get_a_probability_column_each(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=6)
    images = [f"/d/{name}/{i}.png" for i, name in enumerate(["cat", "dog", "fox"] * 2)]
    oof = OutOfFold(images, np.array([0, 1, 2, 0, 1, 2]), probabilities, np.array([1, 1, 1, 2, 2, 2]), THREE)
    assert image_folder(images) == Path("/d")
    write_oof_csv(oof, tmp_path / "oof.csv", folder=Path("/d"))
    lines = (tmp_path / "oof.csv").read_text().splitlines()
    assert lines[0] == "image,label,prob_cat,prob_dog,prob_fox,fold"
    assert lines[1].startswith("cat/0.png,0,") and lines[2].startswith("dog/1.png,1,")
    back = read_oof_csv(tmp_path / "oof.csv", folder=Path("/d"))
    assert back.classes == THREE and back.images == images
    assert back.labels.tolist() == [0, 1, 2, 0, 1, 2] and back.folds.tolist() == [1, 1, 1, 2, 2, 2]
    assert np.allclose(back.probabilities, probabilities, atol=1e-6)
    assert predicted_indices(back.probabilities).tolist() == probabilities.argmax(axis=1).tolist()
    # A label may also be given by its class name (a file written by hand, or by a script).
    (tmp_path / "named.csv").write_text(
        "image,label,prob_cat,prob_dog,prob_fox,fold\na.png,fox,0.1,0.2,0.7,1\n"
    )
    assert read_oof_csv(tmp_path / "named.csv").labels.tolist() == [2]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("image,label,score,fold\na.png,0,0.5,1\n", "not an out-of-fold file"),
        ("image,label,prob_cat,fold\na.png,cat,0.5,1\n", "not an out-of-fold file"),  # one class
        ("image,label,prob_cat,prob_dog\na.png,cat,0.5,0.5\n", "not an out-of-fold file"),  # no fold
        (
            "image,label,prob_cat,prob_dog,fold\na.png,cow,0.5,0.5,1\n",
            r"label cow is not one of the 2 classes \(an index 0\.\.1 or a name: cat, dog\)",
        ),
        (
            "image,label,prob_male,fold\na.png,2,0.5,1\n",
            r"label 2 is not one of the 2 classes \(an index 0\.\.1 or a name: female, male\)",
        ),
        ("image,label,prob_cat,prob_dog,fold\na.png,cat,x,0.5,1\n", "malformed row"),
        ("image,label,prob_cat,prob_dog,fold\na.png,cat,0.5\n", "malformed row"),  # a short row
        ("image,label,prob_male,fold\n", "has no rows"),
    ],
)
def test_other_files_are_refused_with_what_is_wrong(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "x.csv").write_text(text)
    with pytest.raises(BitmojiError, match=problem):
        read_oof_csv(tmp_path / "x.csv")


def test_probabilities_must_have_a_column_per_class_and_a_row_per_image() -> None:
    with pytest.raises(BitmojiError, match=r"shape \(2, 2\) for 2 images of 3 classes"):
        OutOfFold(["a", "b"], np.array([0, 1]), np.full((2, 2), 0.5), np.array([1, 2]), THREE)
    with pytest.raises(BitmojiError, match=r"shape \(2,\) for 2 images of 2 classes"):
        OutOfFold(["a", "b"], np.array([0, 1]), np.array([0.2, 0.7]), np.array([1, 2]))
