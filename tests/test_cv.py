"""`bitmoji cv` and `bitmoji audit` end to end on a tiny generated dataset with two labels
flipped on purpose, asserted through MLflow's client: the parent/child runs, the OOF file, and
the audit finding the flipped labels. One cross-validation is shared by the module."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_store, make_dataset
from mlflow import MlflowClient
from typer.testing import CliRunner

import cli
from bitmoji_ml.data import cache
from bitmoji_ml.data.classes import BITMOJI
from bitmoji_ml.data.lists import read_list
from bitmoji_ml.selection.oof import read_oof_csv

FLIPPED = ("0005.jpg", "0012.jpg")
FOLDS = 4
EPOCHS = 8  # enough for the generated faces to be learnt from 30 images
RECIPE = [
    "--model",
    "compact",
    "--epochs",
    str(EPOCHS),
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--threads",
    "1",
]
EXPERIMENT = "cv-test"


@dataclasses.dataclass
class CVStore:
    uri: str
    lists: Path
    output: str  # what `bitmoji cv` printed
    decoded: list[str]  # every file the decoder read during the cross-validation
    folder: Path


def flip_labels(dataset: Path, image_ids: tuple[str, ...]) -> None:
    """Give `image_ids` the other label in train.csv: the mistakes the audit must find."""
    with open(dataset / "train.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    for row in rows[1:]:
        if row[0] in image_ids:
            row[1] = str(-int(row[1]))
    with open(dataset / "train.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


@pytest.fixture(scope="module")
def cv_store(tmp_path_factory: pytest.TempPathFactory, mlflow_store_template: Path) -> CVStore:
    folder = tmp_path_factory.mktemp("cv")
    uri = copy_store(mlflow_store_template, folder)
    dataset = make_dataset(folder / "bitmoji")
    flip_labels(dataset, FLIPPED)
    runner, lists = CliRunner(), folder / "lists"
    prepared = runner.invoke(cli.app, ["prepare", "--data-dir", str(dataset), "--lists", str(lists)])
    assert prepared.exit_code == 0, prepared.output
    decoded: list[str] = []
    real_decode = cache.decode_image
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setattr(
            cache, "decode_image", lambda path, spec: decoded.append(str(path)) or real_decode(path, spec)
        )
        arguments = ["cv", "--folds", str(FOLDS), "--lists", str(lists), "--experiment", EXPERIMENT, *RECIPE]
        result = runner.invoke(cli.app, arguments)
    assert result.exit_code == 0, result.output
    return CVStore(uri, lists, result.output, decoded, folder)


def labelled_images(lists: Path) -> list[str]:
    return [str(path) for path, _ in read_list(lists / "train.txt") + read_list(lists / "val.txt")]


def parent_and_children(client: MlflowClient) -> tuple:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    parents = client.search_runs([experiment.experiment_id], "tags.run_kind = 'cv'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return parent, sorted(children, key=lambda run: int(run.data.params["cv_fold"]))


def test_cv_is_a_parent_run_with_one_child_per_fold_each_logging_what_train_logs(cv_store: CVStore):
    client = MlflowClient(cv_store.uri)
    parent, children = parent_and_children(client)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["cv_folds"] == str(FOLDS)
    assert "last epoch" in parent.data.params["oof_weights"]
    assert [child.data.params["cv_fold"] for child in children] == ["1", "2", "3", "4"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["run_kind"] == "cv_fold"
        assert child.data.params["epochs"] == str(EPOCHS)
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert [metric.step for metric in history] == list(range(1, EPOCHS + 1))
        for key in ("train_loss", "train_acc", "val_loss", "lr", "epoch_seconds"):
            assert len(client.get_metric_history(child.info.run_id, key)) == EPOCHS, key
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "checkpoints")}
        assert artifacts == {"checkpoints/best.pt", "checkpoints/last.pt"}
        fold = child.data.params["cv_fold"]
        inputs = {d.dataset.name for d in child.inputs.dataset_inputs}
        assert inputs == {f"bitmoji-cv4-fold{fold}-train", f"bitmoji-cv4-fold{fold}-heldout"}
        # No selection on the held-out fold: the fold's score is its last epoch's.
        assert parent.data.metrics[f"fold_{fold}_acc"] == pytest.approx(history[-1].value)
        # final_val_acc is logged by training runs too: one column compares folds and runs.
        assert child.data.metrics["final_val_acc"] == pytest.approx(history[-1].value)
        assert "best_val_acc" not in child.data.metrics
        # The fold first: the UI cuts long run names at the end.
        assert child.info.run_name == f"fold{fold}-{parent.info.run_name}"
    accuracies = [parent.data.metrics[f"fold_{fold}_acc"] for fold in range(1, FOLDS + 1)]
    assert parent.data.metrics["cv_acc"] == pytest.approx(np.mean(accuracies))
    assert parent.data.metrics["cv_acc_std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert "cv accuracy" in cv_store.output and "±" in cv_store.output and "wall time" in cv_store.output


def test_cv_fold_checkpoints_are_last_epoch_models_that_export_does_not_rank(cv_store: CVStore):
    client = MlflowClient(cv_store.uri)
    _, children = parent_and_children(client)
    models = client.search_logged_models([children[0].info.experiment_id])
    assert len(models) == FOLDS  # one per fold: its last epoch, never an earlier "best"
    assert {model.tags["selection"] for model in models} == {"last_epoch"}
    assert {int(model.tags["step"]) for model in models} == {EPOCHS}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", cv_store.uri)
        arguments = ["export-onnx", "--experiment", EXPERIMENT, "--lists", str(cv_store.lists)]
        result = CliRunner().invoke(cli.app, [*arguments, "--output", str(cv_store.folder / "x.onnx")])
    assert result.exit_code == 1
    assert "without validation selection" in result.output and "--run-id" in result.output


def test_the_oof_file_holds_every_labelled_image_once_with_its_fold(cv_store: CVStore, tmp_path: Path):
    client = MlflowClient(cv_store.uri)
    parent, _ = parent_and_children(client)
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/oof_confusion_matrix.png"}
    downloaded = Path(client.download_artifacts(parent.info.run_id, "oof_predictions.csv", str(tmp_path)))
    with open(downloaded, newline="") as handle:  # file names, not absolute paths
        reader = csv.DictReader(handle)
        names = [row["image"] for row in reader]
    assert reader.fieldnames == ["image", "label", "prob_male", "fold"]  # Bitmoji's columns, as before
    assert sorted(names) == sorted(Path(image).name for image in labelled_images(cv_store.lists))
    folder = Path(parent.data.tags["image_folder"])
    oof = read_oof_csv(downloaded, folder=folder)
    assert sorted(oof.images) == sorted(labelled_images(cv_store.lists))
    assert sorted(set(oof.folds.tolist())) == [1, 2, 3, 4]
    for fold in range(1, FOLDS + 1):  # stratified: 5 of each class per fold of 10
        assert np.bincount(oof.labels[oof.folds == fold], minlength=2).tolist() == [5, 5]
    assert oof.classes == BITMOJI and np.allclose(oof.probabilities.sum(axis=1), 1)
    accuracy = float(((oof.probabilities[:, 1] >= 0.5) == oof.labels).mean())
    assert parent.data.metrics["oof_acc"] == pytest.approx(accuracy)
    assert accuracy >= 0.9  # the generated faces are learnt; the flipped labels are the errors


def test_cv_decodes_every_labelled_image_once(cv_store: CVStore):
    assert sorted(cv_store.decoded) == sorted(labelled_images(cv_store.lists))


def test_audit_finds_the_labels_flipped_on_purpose_and_logs_to_the_cv_run(
    cv_store: CVStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cv_store.uri)
    arguments = ["audit", "--experiment", EXPERIMENT, "--top", "5", "--output", str(tmp_path / "audit")]
    result = CliRunner().invoke(cli.app, arguments)  # no --run-id: the newest cv run
    assert result.exit_code == 0, result.output
    with open(tmp_path / "audit" / "label_issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    ranked = [row["image_id"] for row in rows]
    assert set(ranked[:2]) == set(FLIPPED)
    # The OOF file names images relative to the cv run's image_folder: the audit finds them.
    assert all(Path(row["image"]).is_file() for row in rows)
    assert (tmp_path / "audit" / "label_issues.png").read_bytes()[:4] == b"\x89PNG"
    for image_id in FLIPPED:
        assert image_id in result.output
    client = MlflowClient(cv_store.uri)
    parent, _ = parent_and_children(client)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"label_issues.csv", "label_issues.png", "oof_predictions.csv"} <= logged
    assert client.get_run(parent.info.run_id).data.metrics["label_issues"] == len(ranked)


def test_audit_refuses_a_run_that_is_not_a_cv_run(cv_store: CVStore, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cv_store.uri)
    _, children = parent_and_children(MlflowClient(cv_store.uri))
    result = CliRunner().invoke(cli.app, ["audit", "--run-id", children[0].info.run_id])
    assert result.exit_code == 1
    assert "is not a `bitmoji cv` run" in result.output


def test_a_fold_cannot_be_resumed_as_a_training_on_the_lists(
    cv_store: CVStore, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cv_store.uri)
    _, children = parent_and_children(MlflowClient(cv_store.uri))
    arguments = [
        "train",
        "--resume",
        "--run-id",
        children[0].info.run_id,
        "--epochs",
        "9",
        "--lists",
        str(cv_store.lists),
    ]
    result = CliRunner().invoke(cli.app, [*arguments, "--experiment", EXPERIMENT])
    assert result.exit_code == 1
    assert "are not the ones run" in result.output  # it trained on a fold, not on these lists


def test_audit_without_a_cv_run_says_so(mlflow_store: str, tiny_lists: Path):
    result = CliRunner().invoke(cli.app, ["audit", "--experiment", "nothing-here"])
    assert result.exit_code == 1
    assert "no runs yet" in result.output


def test_cv_refuses_early_stopping_which_would_select_on_the_held_out_fold(
    mlflow_store: str, tiny_lists: Path
):
    result = CliRunner().invoke(
        cli.app, ["cv", "--lists", str(tiny_lists), "--config", str(patience_toml(tiny_lists))]
    )
    assert result.exit_code == 1
    assert "patience must be 0" in result.output


def patience_toml(folder: Path) -> Path:
    path = folder.parent / "patience.toml"
    path.write_text("patience = 3\n")
    return path
