"""Folds and the label audit (no training: the audit reads out-of-fold probabilities)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bitmoji_ml.data.classes import BITMOJI
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.selection.audit import face_grid, find_label_issues, rank_labels, write_issues_csv
from bitmoji_ml.selection.folds import labelled_entries, stratified_folds
from bitmoji_ml.selection.oof import OutOfFold, image_folder, read_oof_csv, write_oof_csv


def test_folds_are_stratified_disjoint_and_cover_every_image_once() -> None:
    labels = np.array([0] * 37 + [1] * 23)
    folds = stratified_folds(labels, folds=5, seed=3)
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4]
    assert len(folds) == len(labels)  # one fold per image: disjoint and complete by construction
    for fold in range(5):
        held_out = labels[folds == fold]
        # Each class splits as evenly as it can: 37 -> 7 or 8 per fold, 23 -> 4 or 5.
        assert np.bincount(held_out, minlength=2)[0] in (7, 8)
        assert np.bincount(held_out, minlength=2)[1] in (4, 5)
    assert np.array_equal(folds, stratified_folds(labels, folds=5, seed=3))
    assert not np.array_equal(folds, stratified_folds(labels, folds=5, seed=4))


def test_folds_refuse_too_few_images_of_a_class() -> None:
    with pytest.raises(BitmojiError, match="at least 5 images of each class"):
        stratified_folds(np.array([0] * 10 + [1] * 3), folds=5, seed=0)
    with pytest.raises(BitmojiError, match="at least 2"):
        stratified_folds(np.array([0, 1] * 5), folds=1, seed=0)


def test_labelled_entries_join_train_and_val(tiny_lists: Path) -> None:
    entries = labelled_entries(tiny_lists)
    train = (tiny_lists / "train.txt").read_text().splitlines()
    val = (tiny_lists / "val.txt").read_text().splitlines()
    assert len(entries) == len(train) + len(val)
    assert len({path for path, _ in entries}) == len(entries)


def noisy_oof(flipped: list[int], n: int = 200, seed: int = 0) -> OutOfFold:
    """Confident, mostly right out-of-fold probabilities of Bitmoji (P(female), P(male)) whose
    `flipped` labels are wrong."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 2
    prob = np.where(truth == 1, rng.uniform(0.85, 0.99, n), rng.uniform(0.01, 0.15, n))
    prob[flipped] = np.where(truth[flipped] == 1, 0.98, 0.02)  # the models are sure of the truth
    labels = truth.copy()
    labels[flipped] = 1 - labels[flipped]
    probabilities = np.stack([1 - prob, prob], axis=1)
    return OutOfFold([f"img/{i:04d}.jpg" for i in range(n)], labels, probabilities, np.arange(n) % 5, BITMOJI)


def test_audit_finds_labels_flipped_on_purpose() -> None:
    flipped = [7, 42, 113]
    issues = find_label_issues(noisy_oof(flipped))
    found = [int(issue.image_id[:4]) for issue in issues]
    assert set(flipped) <= set(found)
    assert set(found[:3]) == set(flipped)  # the flipped ones rank first
    assert all(a.label_quality <= b.label_quality for a, b in zip(issues, issues[1:], strict=False))


def test_oof_csv_round_trip_and_issue_files(tmp_path: Path) -> None:
    oof = noisy_oof([3])
    write_oof_csv(oof, tmp_path / "oof.csv")
    back = read_oof_csv(tmp_path / "oof.csv")
    assert back.images == oof.images
    assert np.array_equal(back.labels, oof.labels) and np.array_equal(back.folds, oof.folds)
    assert back.classes == BITMOJI and np.allclose(back.probabilities, oof.probabilities, atol=1e-6)
    issues = find_label_issues(back)
    write_issues_csv(issues, tmp_path / "issues.csv")
    lines = (tmp_path / "issues.csv").read_text().splitlines()
    assert lines[0].startswith("rank,image_id,")
    assert lines[1].split(",")[1] == "0003.jpg"
    face_grid(issues, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_oof_csv_names_images_relative_to_their_folder(tmp_path: Path) -> None:
    """Issue 20: absolute paths made the UI's preview of the file a column of one shared prefix."""
    images = tmp_path / "data" / "trainimages"
    oof = noisy_oof([3], n=10)
    oof = dataclasses.replace(oof, images=[str(images / Path(image).name) for image in oof.images])
    assert image_folder(oof.images) == images
    write_oof_csv(oof, tmp_path / "oof.csv", folder=images)
    with open(tmp_path / "oof.csv", newline="") as handle:
        assert [row["image"] for row in csv.DictReader(handle)] == [f"{i:04d}.jpg" for i in range(10)]
    assert read_oof_csv(tmp_path / "oof.csv", folder=images).images == oof.images
    write_oof_csv(oof, tmp_path / "old.csv")  # a file from before: absolute names are kept
    assert read_oof_csv(tmp_path / "old.csv", folder=tmp_path / "elsewhere").images == oof.images


def test_read_oof_csv_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BitmojiError, match="not an out-of-fold file"):
        read_oof_csv(tmp_path / "x.csv")


def test_rank_labels_lists_the_issues_first_then_the_least_trusted_other_labels() -> None:
    oof = noisy_oof([7, 42])
    ranked = rank_labels(oof, top=5)
    assert [issue.rank for issue in ranked] == [1, 2, 3, 4, 5]
    assert [issue.flagged for issue in ranked] == [True, True, False, False, False]
    assert {int(issue.image_id[:4]) for issue in ranked[:2]} == {7, 42}
    trusted = oof.probabilities[np.arange(len(oof.labels)), oof.labels]  # P(given label)
    trusted[[7, 42]] = np.inf
    expected = [f"{index:04d}.jpg" for index in np.argsort(trusted)[:3]]
    assert [issue.image_id for issue in ranked[2:]] == expected
    assert all(issue.label_quality == pytest.approx(trusted[int(issue.image_id[:4])]) for issue in ranked[2:])
    assert len(rank_labels(oof, top=1)) == 2  # never fewer than the issues


def cv_run_with_oof(oof: OutOfFold, folder: Path) -> str:
    """A finished `cv` parent run holding `oof` as its oof_predictions.csv, as `bitmoji cv` logs it."""
    from bitmoji_ml.tracking.names import CV_RUN, OOF_PREDICTIONS
    from bitmoji_ml.tracking.parents import ParentRun
    from bitmoji_ml.tracking.store import Store

    store = Store.open()
    write_oof_csv(oof, folder / OOF_PREDICTIONS)
    with ParentRun(store, experiment_id=store.experiment_id("audited"), run_name="cv5", kind=CV_RUN) as run:
        run.log_artifact(folder / OOF_PREDICTIONS)
    return run.run_id


def test_audit_writes_its_files_where_a_person_can_open_them_and_says_where(
    mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22 item 7: without --output the face grid was only inside the MLflow store."""
    from typer.testing import CliRunner

    import cli

    run_id = cv_run_with_oof(noisy_oof([7, 42]), tmp_path)
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    result = CliRunner().invoke(cli.app, ["audit", "--experiment", "audited", "--top", "4"])
    assert result.exit_code == 0, result.output
    png, issues = (
        work / "reports" / "audit" / "label_issues.png",
        work / "reports" / "audit" / "label_issues.csv",
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert issues.read_text().startswith("rank,image_id,")
    text = " ".join(result.output.split())  # the message wraps nowhere, but be safe
    assert f"Look at {png.resolve()};" in text and f"({issues.resolve()} holds the flagged ones)" in text
    assert run_id in text
    (work / "taken").write_text("")
    result = CliRunner().invoke(cli.app, ["audit", "--experiment", "audited", "--output", "taken"])
    assert result.exit_code == 1 and "--output taken is a file" in result.output
