"""Evaluation metrics against hand-worked examples, and `evaluate` on a tiny exported model."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from colour_models import use_contract_onnx_model
from mlflow import MlflowClient
from trained_store import EXPERIMENT, TrainedStore, exported_store
from typer.testing import CliRunner

import cli
from bitmoji_ml import evaluation, labelled_set
from bitmoji_ml import metrics as scoring
from bitmoji_ml.data.classes import BITMOJI, predicted_indices
from bitmoji_ml.data.lists import read_manifest
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import DEFAULT_MODEL
from bitmoji_ml.tracking.datasets import file_digest
from bitmoji_ml.tracking.names import evaluation_experiment
from bitmoji_ml.tracking.records import TrainingList
from bitmoji_ml.training_overlap import training_overlap

# Eight faces (1 = male): P(male) >= 0.5 calls male, so predictions are 1 1 0 1 0 0 0 1.
LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 1])
PROBS = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.5])


def two(prob_male: np.ndarray) -> np.ndarray:
    """(n, 2) probabilities [P(female), P(male)] of P(male)."""
    return np.stack([1 - prob_male, prob_male], axis=1)


def test_confusion_matrix_rows_are_true_classes():
    predicted = predicted_indices(two(PROBS))
    assert predicted.tolist() == [1, 1, 0, 1, 0, 0, 0, 1]
    # true female: 3 called female, 1 called male; true male: 1 called female, 3 called male
    assert scoring.confusion_matrix(LABELS, predicted, 2).tolist() == [[3, 1], [1, 3]]


def test_scores_by_hand():
    metrics = scoring.classification_metrics(LABELS, two(PROBS), BITMOJI)
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["precision"] == pytest.approx(3 / 4)  # 3 of the 4 called male are male
    assert metrics["recall"] == pytest.approx(3 / 4)  # 3 of the 4 males found
    assert metrics["f1"] == pytest.approx(0.75)
    # male/female pairs (16) where the male scores higher: 0.9 beats 4, 0.6 beats 3,
    # 0.3 beats 2, 0.5 beats 3 -> 12 / 16
    assert metrics["roc_auc"] == pytest.approx(12 / 16)
    assert metrics["misclassified"] == 2
    assert metrics["images"] == 8


def test_precision_recall_f1_without_positives_are_zero():
    labels, predicted = np.array([0, 0, 1]), np.array([0, 0, 0])
    assert scoring.precision(labels, predicted) == 0.0
    assert scoring.recall(labels, predicted) == 0.0
    assert scoring.f1(labels, predicted) == 0.0


def test_roc_auc_counts_ties_as_half():
    # pairs (male, female): (0.5, 0.5) tie = 0.5, (0.5, 0.2) = 1, (0.9, 0.5) = 1, (0.9, 0.2) = 1
    assert scoring.roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])) == pytest.approx(3.5 / 4)
    assert scoring.roc_auc(np.array([0, 1]), np.array([0.3, 0.3])) == pytest.approx(0.5)
    assert math.isnan(scoring.roc_auc(np.array([1, 1]), np.array([0.2, 0.9])))


def test_roc_curve_points_and_area():
    labels, probs = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    fpr, tpr = scoring.roc_curve(labels, probs)
    # thresholds 0.8, 0.4, 0.35, 0.1 admit: a male, a female, a male, a female
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1]
    assert tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(scoring.roc_auc(labels, probs)) == pytest.approx(0.75)
    # tied scores make one point, not a staircase
    fpr, tpr = scoring.roc_curve(np.array([0, 1]), np.array([0.5, 0.5]))
    assert fpr.tolist() == [0, 1] and tpr.tolist() == [0, 1]


def test_log_loss_by_hand_and_clipped():
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert scoring.log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(expected)
    # certain and wrong: clipped to -log(1e-7) instead of infinity
    assert scoring.log_loss(np.array([0, 1]), np.array([1.0, 0.0])) == pytest.approx(
        -math.log(1e-7), rel=1e-6
    )


def test_hardest_faces_most_wrong_first_else_least_confident():
    chosen, title = evaluation.hardest_faces(LABELS, two(PROBS))
    assert chosen.tolist() == [2, 3]  # male at 0.3 (0.7 off), female at 0.7 (0.7 off); stable order
    assert "misclassified: 2 of 8" in title
    chosen, title = evaluation.hardest_faces(np.array([1, 0, 1]), two(np.array([0.9, 0.45, 0.55])), limit=2)
    assert chosen.tolist() == [1, 2]
    assert "least confident" in title


def test_csv_labels_use_trainimages_beside_the_csv(tiny_dataset: Path):
    data = labelled_set.read_labelled(tiny_dataset / "train.csv")
    assert len(data.paths) == 40
    assert data.paths[1] == tiny_dataset / "trainimages" / "0001.jpg"
    assert data.labels[:2].tolist() == [0, 1]  # Kaggle -1 / 1
    assert data.name == "train"


def test_missing_images_and_lists_are_clear_errors(tiny_dataset: Path, tmp_path: Path):
    with pytest.raises(BitmojiError, match="bitmoji prepare"):
        labelled_set.read_labelled(tmp_path / "nothing.txt")
    other = tmp_path / "other.csv"
    shutil.copy(tiny_dataset / "train.csv", other)
    with pytest.raises(BitmojiError, match="40 image\\(s\\) of .*--images"):
        labelled_set.read_labelled(other)
    assert len(labelled_set.read_labelled(other, tiny_dataset / "trainimages").paths) == 40


@pytest.fixture
def store(tmp_path_factory, mlflow_store_template, monkeypatch) -> TrainedStore:
    built = exported_store(tmp_path_factory, mlflow_store_template)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", built.uri)
    use_contract_onnx_model(monkeypatch)
    return built


def test_evaluate_model_file_writes_plots_and_logs_a_linked_run(store: TrainedStore, tmp_path: Path):
    out = tmp_path / "eval"
    result = evaluation.evaluate_job(
        model=store.onnx, lists_dir=store.lists, experiment=EXPERIMENT, output_dir=out, threads=1
    )
    files = {path.name for path in out.iterdir()}
    assert set(evaluation.PLOT_FILES) <= files
    assert {"metrics.json", "predictions.csv"} <= files
    assert all((out / name).stat().st_size > 1000 for name in evaluation.PLOT_FILES)
    with open(out / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10  # the val list of 40 images at val fraction 0.25
    probs = np.array([float(row["prob_male"]) for row in rows])
    labels = np.array([int(row["label"]) for row in rows])
    assert result.metrics["accuracy"] == pytest.approx(scoring.accuracy(labels, probs >= 0.5))
    assert result.confusion_matrix.sum() == 10

    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.run_name == "eval-m.onnx-val"
    evaluations = client.get_experiment_by_name(evaluation_experiment(EXPERIMENT))
    assert run.info.experiment_id == evaluations.experiment_id  # not among the training runs
    tags = run.data.tags
    assert tags["evaluation"] == "true"
    assert tags["source_run_id"] == store.run_ids[0]
    assert tags["evaluated_model"] == str(store.onnx.resolve())
    assert tags["model"] == DEFAULT_MODEL
    assert run.data.metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert run.data.params["threshold"] == "0.5" and run.data.params["classes"] == "female,male"
    assert set(run.data.metrics) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    logged = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
    assert set(evaluation.PLOT_FILES) | {"metrics.json", "predictions.csv"} == logged
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["bitmoji-val"]
    assert result.overlap.training == 0 and tags["training_images_scored"] == "0"  # the val list


def test_evaluate_run_id_links_metrics_to_its_onnx_model(store: TrainedStore, tmp_path: Path):
    result = evaluation.evaluate_job(
        run_id=store.run_ids[0],
        labels_file=store.dataset / "train.csv",
        experiment=EXPERIMENT,
        threads=1,
    )
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.run_name == "eval-m.onnx-train"
    assert result.metrics["images"] == 40
    model_id = run.data.tags["evaluated_model_id"]
    assert [model.model_id for model in run.inputs.model_inputs] == [model_id]
    assert client.get_logged_model(model_id).source_run_id == store.run_ids[0]
    linked = [m for m in client.get_logged_model(model_id).metrics if m.run_id == result.run_id]
    assert {m.key for m in linked} >= {"accuracy", "roc_auc"}
    # Issue 22 item 9: train.csv holds the 30 images of the run's train list (and the 10 of val).
    assert result.overlap.training == 30 and result.overlap.lists == [(store.lists / "train.txt").resolve()]
    assert run.data.tags["training_images_scored"] == "30"


def test_evaluate_says_when_the_model_trained_on_the_scored_images(store: TrainedStore):
    arguments = ["evaluate", "--run-id", store.run_ids[0], "--labels", str(store.dataset / "train.csv")]
    result = CliRunner().invoke(cli.app, [*arguments, "--experiment", EXPERIMENT, "--threads", "1"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "30 of the 40 scored images (75.0%) are images this model trained on" in text
    assert "not how it does on new faces" in text
    listing = CliRunner().invoke(cli.app, ["runs", "--evaluations", "--experiment", EXPERIMENT])
    assert listing.exit_code == 0, listing.output
    assert "trained on" in listing.output.splitlines()[0]


def test_evaluate_cli_defaults_to_the_champion(store: TrainedStore, tmp_path: Path):
    result = CliRunner().invoke(
        cli.app,
        ["evaluate", "--lists", str(store.lists), "--experiment", EXPERIMENT, "--threads", "1"],
    )
    assert result.exit_code == 0, result.output
    assert f"models:/{EXPERIMENT}/1 (v1)" in result.output
    for word in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "true \\ predicted"):
        assert word in result.output
    run_id = result.output.split("logged evaluation run ")[1].split()[0]
    assert MlflowClient().get_run(run_id).data.tags["model_version"] == "1"


def test_evaluate_errors_say_what_to_do(store: TrainedStore, tmp_path: Path):
    with pytest.raises(BitmojiError, match=f"export-onnx --run-id {store.run_ids[1]}"):
        evaluation.evaluate_job(run_id=store.run_ids[1], lists_dir=store.lists, experiment=EXPERIMENT)
    with pytest.raises(BitmojiError, match="unknown run id"):
        evaluation.evaluate_job(run_id="0" * 32, lists_dir=store.lists, experiment=EXPERIMENT)
    with pytest.raises(BitmojiError, match="not found"):
        evaluation.evaluate_job(model=tmp_path / "none.onnx", lists_dir=store.lists)
    result = CliRunner().invoke(
        cli.app, ["evaluate", "--model", str(store.onnx), "--run-id", "x", "--lists", str(store.lists)]
    )
    assert result.exit_code == 1
    assert "not both" in result.output


def test_evaluate_cli_labels_file_and_output_folder_with_commas_and_quotes_in_paths(
    store: TrainedStore, tmp_path: Path
):
    """`--labels FILE --output DIR --no-log`: predictions.csv is real CSV, so image paths with
    a comma or a quote read back intact (it was written unquoted, one column per comma)."""
    folder = tmp_path / 'odd, "names"'
    folder.mkdir()
    sources = sorted((store.dataset / "trainimages").iterdir())[:4]
    names = ["a, b.jpg", 'say "hi".jpg', 'both, "x".jpg', "plain.jpg"]
    lines = []
    for index, (source, name) in enumerate(zip(sources, names, strict=True)):
        shutil.copy(source, folder / name)
        lines.append(f"{folder / name} {index % 2}\n")
    labels_file = tmp_path / "odd.txt"
    labels_file.write_text("".join(lines))
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli.app,
        ["evaluate", "--model", str(store.onnx), "--labels", str(labels_file), "--output", str(out)]
        + ["--no-log", "--threads", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "on 4 images of" in result.output
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"] for row in rows] == [str(folder / name) for name in names]
    assert [row["label"] for row in rows] == ["0", "1", "0", "1"]
    assert all(0 <= float(row["prob_male"]) <= 1 for row in rows)


def test_metrics_agree_with_the_hand_written_definitions_on_random_data():
    """scikit-learn's numbers are the textbook ones: AUC as the share of (male, female) pairs
    ranked right (ties half), log loss as the mean cross-entropy."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    probs = np.round(rng.random(200), 2)  # rounding makes ties
    male, female = probs[labels == 1], probs[labels == 0]
    pairs = (male[:, None] > female[None, :]).sum() + 0.5 * (male[:, None] == female[None, :]).sum()
    assert scoring.roc_auc(labels, probs) == pytest.approx(pairs / (len(male) * len(female)))
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    expected = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
    assert scoring.log_loss(labels, probs) == pytest.approx(expected)
    matrix = scoring.confusion_matrix(labels, probs >= 0.5, 2)
    assert matrix.sum() == 200 and matrix[1, 1] == ((labels == 1) & (probs >= 0.5)).sum()


# --- training images among the scored ones (issue 22 item 9) --------------------------------------


def recorded_train_list(lists: Path, source: Path | None) -> list[TrainingList]:
    return [TrainingList("bitmoji-train", file_digest(lists / "train.txt"), source)]


def test_overlap_counts_the_scored_images_of_the_recorded_training_lists(
    tiny_dataset: Path, tiny_lists: Path
):
    scored = labelled_set.read_labelled(tiny_dataset / "train.csv").paths  # all 40: 30 train, 10 val
    found = training_overlap(
        scored,
        metadata={},
        lists_dir=tiny_lists,
        recorded=recorded_train_list(tiny_lists, tiny_lists / "train.txt"),
    )
    assert (found.scored, found.training, found.lists) == (40, 30, [tiny_lists / "train.txt"])
    assert found.tag == "30" and found.message().startswith("30 of the 40 scored images (75.0%)")
    val = labelled_set.read_labelled(tiny_lists / "val.txt").paths
    found = training_overlap(
        val, metadata={}, lists_dir=tiny_lists, recorded=recorded_train_list(tiny_lists, None)
    )
    assert found.training == 0 and found.message().startswith(
        "none of the 10 scored images"
    )  # found by digest


def test_equal_file_names_in_two_class_folders_are_two_images_and_moved_data_falls_back_to_names(
    tmp_path: Path,
):
    from bitmoji_ml.training_overlap import count_trained

    for folder in ("cat", "dog"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "001.png").write_bytes(b"x")
    trained = [tmp_path / "cat" / "001.png"]
    assert count_trained([tmp_path / "dog" / "001.png"], trained) == 0  # a file name alone said 1
    assert count_trained([tmp_path / "dog" / ".." / "cat" / "001.png"], trained) == 1
    moved = [tmp_path / "gone" / "cat" / "001.png"]  # lists from before the data folder moved
    assert count_trained([tmp_path / "cat" / "001.png"], moved) == 1


def test_overlap_is_unknown_when_the_training_list_is_gone(
    tiny_dataset: Path, tiny_lists: Path, tmp_path: Path
):
    scored = labelled_set.read_labelled(tiny_dataset / "train.csv").paths
    recorded = [TrainingList("bitmoji-train", "0123456789abcdef", tmp_path / "old" / "train.txt")]
    found = training_overlap(scored, metadata={}, lists_dir=tiny_lists, recorded=recorded)
    assert found.training is None and found.tag == "unknown"
    assert "no file holds its training list bitmoji-train (digest 0123456789abcdef) any more" in found.reason
    assert found.reason.endswith(f"(looked in {tmp_path / 'old' / 'train.txt'}, {tiny_lists})")
    found = training_overlap(scored, metadata={}, lists_dir=tiny_lists, recorded=[])
    assert found.training is None and "recorded no training dataset" in found.reason


def test_overlap_without_mlflow_uses_the_lists_the_model_was_trained_on(tiny_dataset: Path, tiny_lists: Path):
    scored = labelled_set.read_labelled(tiny_dataset / "train.csv").paths
    digest = read_manifest(tiny_lists)["digest"]
    found = training_overlap(scored, metadata={"data_digest": digest}, lists_dir=tiny_lists, recorded=None)
    assert found.training == 30
    found = training_overlap(scored, metadata={"data_digest": "other"}, lists_dir=tiny_lists, recorded=None)
    assert found.training is None and "trained on other lists" in found.reason
