"""The label audit of N classes (issue 18): cleanlab on (n, N) out-of-fold probabilities, the
files named with class names, both shapes of oof_predictions.csv, and Bitmoji's files byte for
byte as in round 1."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from test_selection import cv_run_with_oof, noisy_oof

from bitmoji_ml.data.classes import BITMOJI, Classes
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.selection.audit import (
    face_grid,
    find_label_issues,
    issue_caption,
    rank_labels,
    write_issues_csv,
)
from bitmoji_ml.selection.oof import OutOfFold, read_oof_csv, write_oof_csv

FRUIT = Classes(("apple", "banana", "cherry"))


def noisy_three(flipped: list[int], n: int = 150, seed: int = 0) -> tuple[OutOfFold, np.ndarray]:
    """Confident, mostly right out-of-fold probabilities of three classes whose `flipped` labels
    name the next class instead of the true one; also returns the truth."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 3
    probabilities = rng.dirichlet([1, 1, 1], n) * 0.15
    probabilities[np.arange(n), truth] += 0.85
    probabilities[flipped] = 0.01
    probabilities[flipped, truth[flipped]] = 0.98  # the models are sure of the truth
    labels = truth.copy()
    labels[flipped] = (truth[flipped] + 1) % 3
    images = [f"img/{i:04d}.jpg" for i in range(n)]
    return OutOfFold(images, labels, probabilities, np.arange(n) % 5, FRUIT), truth


def test_audit_of_three_classes_finds_the_flipped_labels_and_suggests_the_truth() -> None:
    flipped = [4, 50, 101]
    oof, truth = noisy_three(flipped)
    issues = find_label_issues(oof)
    assert {int(issue.image_id[:4]) for issue in issues[:3]} == set(flipped)
    for issue in issues[:3]:
        index = int(issue.image_id[:4])
        assert issue.label == (truth[index] + 1) % 3 and issue.suggested == truth[index]
        assert issue.label_quality == pytest.approx(0.01 / 1.0, abs=1e-9)  # P(given label)
        assert len(issue.probabilities) == 3


def test_three_class_issue_csv_names_the_given_and_suggested_classes(tmp_path: Path) -> None:
    oof, _ = noisy_three([4])
    ranked = rank_labels(oof, top=3)
    write_issues_csv([issue for issue in ranked if issue.flagged], tmp_path / "issues.csv", FRUIT)
    with open(tmp_path / "issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "rank",
        "image_id",
        "image",
        "label",
        "suggested",
        "prob_apple",
        "prob_banana",
        "prob_cherry",
        "label_quality",
        "fold",
    ]
    # image 4 is a banana (4 % 3 == 1) labelled cherry
    assert (rows[0]["image_id"], rows[0]["label"], rows[0]["suggested"]) == ("0004.jpg", "cherry", "banana")
    assert float(rows[0]["prob_banana"]) == pytest.approx(0.98) and rows[0]["label_quality"] == "0.010000"
    assert issue_caption(ranked[0], FRUIT) == "0004.jpg\nlabel cherry, P(cherry) 0.01\nsuggested banana"


def test_a_bitmoji_oof_file_with_prob_male_only_reads_as_two_classes(tmp_path: Path) -> None:
    path = tmp_path / "oof.csv"
    path.write_text("image,label,prob_male,fold\nx.jpg,1,0.750000,1\ny.jpg,0,0.100000,2\n")
    oof = read_oof_csv(path)
    assert oof.classes == BITMOJI
    assert oof.probabilities.tolist() == [[0.25, 0.75], [0.9, 0.1]]


def test_bitmoji_audit_files_are_round_one_byte_for_byte(tmp_path: Path) -> None:
    """oof_predictions.csv and label_issues.csv of Bitmoji as main wrote them before issue 18
    (recorded from that code on this very input)."""
    oof = noisy_oof([7, 42], n=60)
    write_oof_csv(oof, tmp_path / "oof.csv")
    digest = hashlib.sha256((tmp_path / "oof.csv").read_bytes()).hexdigest()
    assert digest == "94e58637ed320418b252a7f084ad894df20ebd57b4fd876c2ae774863fe5b3eb"
    write_issues_csv(rank_labels(read_oof_csv(tmp_path / "oof.csv"), top=4), tmp_path / "issues.csv")
    assert (tmp_path / "issues.csv").read_text() == (
        "rank,image_id,image,label,prob_male,label_quality,fold\n"
        "1,0042.jpg,img/0042.jpg,male,0.020000,0.020000,2\n"
        "2,0007.jpg,img/0007.jpg,female,0.980000,0.020000,2\n"
        "3,0011.jpg,img/0011.jpg,male,0.850383,0.850383,1\n"
        "4,0003.jpg,img/0003.jpg,male,0.852314,0.852314,3\n"
    )


def test_the_audit_needs_two_classes_among_the_labels() -> None:
    oof, _ = noisy_three([], n=9)
    one = OutOfFold(oof.images, np.zeros(9, dtype=int), oof.probabilities, oof.folds, FRUIT)
    with pytest.raises(BitmojiError, match="at least two classes"):
        find_label_issues(one)


def test_three_class_face_grid_is_drawn(tmp_path: Path) -> None:
    from PIL import Image

    oof, _ = noisy_three([4, 50], n=60)
    folder = tmp_path / "img"
    folder.mkdir()
    for image in oof.images:
        Image.new("RGB", (32, 32), (200, 120, 40)).save(folder / Path(image).name)
    oof = OutOfFold(
        [str(folder / Path(i).name) for i in oof.images], oof.labels, oof.probabilities, oof.folds, FRUIT
    )
    face_grid(rank_labels(oof, top=6), tmp_path / "grid.png", limit=6, classes=FRUIT)
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_audit_cli_on_a_three_class_cv_run(mlflow_store: str, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import cli

    oof, _ = noisy_three([4, 50])
    run_id = cv_run_with_oof(oof, tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli.app, ["audit", "--experiment", "audited", "--top", "4", "--output", "out"]
    )
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("rank"))
    assert header.split()[:5] == ["rank", "image_id", "given", "label", "suggested"]
    assert "0004.jpg  cherry" in result.output and run_id in result.output
    written = (tmp_path / "out" / "label_issues.csv").read_text().splitlines()
    assert (
        written[0]
        == "rank,image_id,image,label,suggested,prob_apple,prob_banana,prob_cherry,label_quality,fold"
    )
