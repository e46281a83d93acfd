"""Judging a model of N classes (issue 18): the metrics, the tables, the files and `evaluate`
on an ONNX model of three classes; Bitmoji's numbers and text as in round 1."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from colour_models import class_model, labelled_list, use_contract_onnx_model
from mlflow import MlflowClient
from typer.testing import CliRunner

import cli
from bitmoji_ml import evaluation
from bitmoji_ml import metrics as scoring
from bitmoji_ml.data.classes import BITMOJI, Classes, predicted_indices
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.labelled_set import LabelledSet, for_model, read_labelled
from bitmoji_ml.tracking.names import evaluation_experiment

ABC = Classes(("ant", "bee", "cat"))
# Six images of three classes; the decisions are 0 1 2 2 1 2 (the tie of row 5 goes to the later class).
LABELS = np.array([0, 0, 1, 1, 2, 2])
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.6, 0.1],  # ant called bee
        [0.1, 0.4, 0.5],  # bee called cat
        [0.2, 0.3, 0.5],  # bee called cat
        [0.1, 0.8, 0.1],  # cat called bee
        [0.1, 0.45, 0.45],  # tie bee / cat: cat
    ]
)


def test_bitmoji_metrics_are_round_one_keys_and_values() -> None:
    """The dict main's classification_metrics(labels, prob_male) returned before issue 18 on this
    very input (float32 probabilities, 0, 1 and ties at 0.5 among them)."""
    rng = np.random.default_rng(18)
    labels = rng.integers(0, 2, 60)
    prob_male = np.round(rng.random(60), 2).astype(np.float32)
    prob_male[:4] = [0.0, 1.0, 0.5, 0.5]
    prob_male = prob_male.astype(np.float64)
    probabilities = np.stack([1 - prob_male, prob_male], axis=1)
    assert scoring.classification_metrics(labels, probabilities, BITMOJI) == {
        "accuracy": 0.4166666666666667,
        "precision": 0.5806451612903226,
        "recall": 0.45,
        "f1": 0.5070422535211268,
        "roc_auc": 0.4275,
        "log_loss": 1.6008470174584397,
        "images": 60.0,
        "misclassified": 35.0,
    }


def test_bitmoji_metrics_table_is_round_one_text() -> None:
    labels, prob_male = np.array([1, 1, 1, 0, 0, 0, 0, 1]), np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.5])
    probabilities = np.stack([1 - prob_male, prob_male], axis=1)
    metrics = scoring.classification_metrics(labels, probabilities, BITMOJI)
    matrix = scoring.confusion_matrix(labels, predicted_indices(probabilities), 2)
    assert scoring.metrics_table(metrics, matrix, BITMOJI) == (
        "metric      value\n---------  ------\naccuracy   0.7500\nprecision  0.7500\nrecall     0.7500\n"
        "f1         0.7500\nroc_auc    0.7500\nlog_loss   0.5696\n\ntrue \\ predicted  female  male\n"
        "----------------  ------  ----\nfemale                 3     1\nmale                   1     3"
    )


def test_three_class_metrics_by_hand() -> None:
    metrics = scoring.classification_metrics(LABELS, PROBS, ABC)
    assert metrics["accuracy"] == pytest.approx(2 / 6)
    assert metrics["misclassified"] == 4 and metrics["images"] == 6
    # called ant: 1 (right); called bee: 2 (1 ant, 1 cat); called cat: 3 (2 bees, 1 cat)
    assert metrics["precision_ant"] == 1.0 and metrics["recall_ant"] == 0.5
    assert metrics["precision_bee"] == 0.0 and metrics["recall_bee"] == 0.0
    assert metrics["precision_cat"] == pytest.approx(1 / 3) and metrics["recall_cat"] == 0.5
    f1_ant, f1_cat = 2 * 1 * 0.5 / 1.5, 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5)
    assert metrics["macro_f1"] == pytest.approx((f1_ant + 0 + f1_cat) / 3)
    true_prob = PROBS[np.arange(6), LABELS]
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log(true_prob)))
    assert "roc_auc" not in metrics and "precision" not in metrics and "f1" not in metrics
    assert scoring.confusion_matrix(LABELS, predicted_indices(PROBS), 3).tolist() == [
        [1, 1, 0],
        [0, 0, 2],
        [0, 1, 1],
    ]


def test_a_class_missing_from_a_small_set_still_scores() -> None:
    labels = np.array([0, 1, 1])  # no cat
    probabilities = np.array([[0.9, 0.05, 0.05], [0.1, 0.6, 0.3], [0.0, 0.0, 1.0]], dtype=np.float32)
    metrics = scoring.classification_metrics(labels, probabilities, ABC)
    # the certain, wrong third image is clipped at 1e-7, as round 1 clipped P(male)
    expected = -(math.log(0.9) + math.log(0.6) + math.log(1e-7)) / 3
    assert metrics["log_loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["recall_cat"] == 0.0 and metrics["precision_cat"] == 0.0
    assert scoring.confusion_matrix(labels, predicted_indices(probabilities), 3).shape == (3, 3)


def test_two_classes_of_ones_own_get_per_class_scores_and_roc() -> None:
    classes = Classes(("no", "yes"))
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    metrics = scoring.classification_metrics(np.array([0, 1, 1, 1]), probabilities, classes)
    assert set(metrics) == {
        "accuracy",
        "macro_f1",
        "log_loss",
        "roc_auc",
        "precision_no",
        "recall_no",
        "precision_yes",
        "recall_yes",
        "images",
        "misclassified",
    }
    assert metrics["roc_auc"] == 1.0 and metrics["recall_yes"] == pytest.approx(2 / 3)


def test_three_class_metrics_table_names_the_classes() -> None:
    metrics = scoring.classification_metrics(LABELS, PROBS, ABC)
    matrix = scoring.confusion_matrix(LABELS, predicted_indices(PROBS), 3)
    lines = scoring.metrics_table(metrics, matrix, ABC).splitlines()
    assert [line.split()[0] for line in lines[2:5]] == ["accuracy", "macro_f1", "log_loss"]
    assert lines[6].split() == ["class", "images", "precision", "recall"]
    assert lines[8].split() == ["ant", "2", "1.0000", "0.5000"]
    assert lines[12].split() == ["true", "\\", "predicted", "ant", "bee", "cat"]
    assert lines[14:] == [line for line in lines[14:] if line.split()[0] in ABC.names]
    assert lines[15].split() == ["bee", "0", "0", "2"]


def test_hardest_faces_of_three_classes_lowest_true_probability_first() -> None:
    chosen, title = evaluation.hardest_faces(LABELS, PROBS)
    # wrong: rows 1 (P(ant) 0.3), 2 (P(bee) 0.4), 3 (P(bee) 0.3), 4 (P(cat) 0.1)
    assert chosen.tolist() == [4, 1, 3, 2] and title == "misclassified: 4 of 6"
    right = np.array([[0.6, 0.2, 0.2], [0.1, 0.5, 0.4], [0.05, 0.05, 0.9]])
    chosen, title = evaluation.hardest_faces(np.array([0, 1, 2]), right)
    assert chosen.tolist() == [1, 0, 2] and "least confident" in title


def test_captions_say_true_class_its_probability_and_the_prediction() -> None:
    data = LabelledSet([Path(f"/x/{i}.png") for i in range(6)], LABELS, Path("/x/val.txt"), "val", ABC)
    captions = evaluation.face_captions(data, PROBS, np.array([4]), ABC)
    assert captions == ["4.png\ntrue cat, P(cat) 0.10,\npredicted bee"]


def test_the_roc_curve_is_drawn_for_two_classes_only() -> None:
    assert "roc_curve.png" in evaluation.plot_files(BITMOJI)
    assert evaluation.plot_files(ABC) == ("confusion_matrix.png", "probability_histogram.png", "faces.png")


def test_a_set_of_other_classes_is_refused_by_name_and_order() -> None:
    other_order = LabelledSet([], np.array([0]), Path("lists/val.txt"), "val", Classes(("bee", "ant", "cat")))
    with pytest.raises(
        BitmojiError, match="tells apart ant, bee, cat but lists/val.txt is labelled bee, ant, cat"
    ):
        for_model(other_order, ABC, "m.onnx")
    with pytest.raises(BitmojiError, match="tells apart female, male but .* is labelled ant, bee, cat"):
        for_model(LabelledSet([], np.array([0]), Path("v.txt"), "v", ABC), BITMOJI, "m.onnx")
    own = LabelledSet([], np.array([0, 2, 1]), Path("mine.txt"), "mine", None)  # no manifest: indices only
    with pytest.raises(BitmojiError, match=r"mine.txt has label\(s\) 2 but the model m.onnx has 2 classes"):
        for_model(own, BITMOJI, "m.onnx")
    assert for_model(own, ABC, "m.onnx").classes == ABC


# --- `evaluate` on a three-class ONNX model ------------------------------------------------------

# (label, painted colour) per image: the model calls each image the class of its colour.
ROWS = [(0, 0), (0, 0), (0, 2), (1, 1), (1, 1), (1, 0), (0, 0), (1, 1), (2, 2), (2, 1)]


@pytest.fixture
def three_class(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """(model.onnx, val.txt with a manifest naming ant, bee, cat) in tmp_path."""
    use_contract_onnx_model(monkeypatch)
    return class_model(tmp_path / "model.onnx", ABC), labelled_list(tmp_path / "lists", ROWS, classes=ABC)


def test_evaluate_three_classes_writes_class_named_files(three_class, tmp_path: Path) -> None:
    model, listed = three_class
    out = tmp_path / "out"
    result = evaluation.evaluate_job(
        model=model, labels_file=listed, output_dir=out, log_run=False, threads=1
    )
    assert result.classes == ABC
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [*evaluation.plot_files(ABC), "metrics.json", "predictions.csv"]
    )
    assert result.confusion_matrix.tolist() == [[3, 0, 1], [1, 3, 0], [0, 1, 1]]
    assert result.metrics["accuracy"] == pytest.approx(7 / 10) and "roc_auc" not in result.metrics
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", "label", "prob_ant", "prob_bee", "prob_cat"]
    assert [row["label"] for row in rows] == ["ant"] * 3 + ["bee"] * 3 + ["ant", "bee", "cat", "cat"]
    assert float(rows[2]["prob_cat"]) > 0.5 and sum(
        float(rows[2][f"prob_{n}"]) for n in ABC.names
    ) == pytest.approx(1, abs=1e-5)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["confusion_matrix"]["rows_true_columns_predicted"] == ["ant", "bee", "cat"]


def test_evaluate_cli_three_classes_prints_and_logs_class_names(three_class, mlflow_store: str) -> None:
    model, listed = three_class
    arguments = ["evaluate", "--model", str(model), "--labels", str(listed), "--experiment", "judged"]
    result = CliRunner().invoke(cli.app, [*arguments, "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "macro_f1" in result.output and "precision_ant" not in result.output
    table = result.output[result.output.index("true \\ predicted") :].splitlines()
    assert table[0].split()[-3:] == ["ant", "bee", "cat"] and table[2].split() == ["ant", "3", "0", "1"]
    client = MlflowClient()
    (run,) = client.search_runs(
        [client.get_experiment_by_name(evaluation_experiment("judged")).experiment_id]
    )
    assert run.data.params["classes"] == "ant,bee,cat" and "threshold" not in run.data.params
    assert {"precision_cat", "recall_bee", "macro_f1", "log_loss"} <= set(run.data.metrics)
    assert "roc_curve.png" not in {artifact.path for artifact in client.list_artifacts(run.info.run_id)}


def test_evaluate_refuses_a_set_of_other_classes_and_writes_nothing(three_class, tmp_path: Path) -> None:
    model, _ = three_class
    listed = labelled_list(tmp_path / "other", ROWS, classes=Classes(("ant", "cat", "bee")))
    out = tmp_path / "out"
    with pytest.raises(
        BitmojiError, match="tells apart ant, bee, cat but .*other/val.txt is labelled ant, cat, bee"
    ):
        evaluation.evaluate_job(model=model, labels_file=listed, output_dir=out, log_run=False, threads=1)
    assert not out.exists()


def test_a_list_beside_an_old_manifest_is_bitmoji_and_a_bare_list_names_no_classes(tmp_path: Path) -> None:
    listed = labelled_list(tmp_path / "old", [(0, 0), (1, 1)], classes=ABC)
    manifest = json.loads((listed.parent / "manifest.json").read_text())
    del manifest["classes"]
    (listed.parent / "manifest.json").write_text(json.dumps(manifest))
    assert read_labelled(listed).classes == BITMOJI
    (listed.parent / "manifest.json").unlink()
    assert read_labelled(listed).classes is None


# --- a CSV of image file and class name of one's own ------------------------------------------------


def named_csv(folder: Path, rows: list[tuple[str, int]], columns: tuple[str, str] = ("file", "kind")) -> Path:
    """`folder/held_out.csv` of (class name, painted colour) rows, the images in `folder/pics/`."""
    from colour_models import CLASS_COLOURS, paint

    lines = [",".join(columns)]
    for number, (name, painted) in enumerate(rows):
        paint(folder / "pics", f"{number:03d}.png", CLASS_COLOURS[painted])
        lines.append(f"{number:03d}.png,{name}")
    path = folder / "held_out.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_of_class_names_is_matched_to_the_model_by_name(tmp_path: Path) -> None:
    held_out = named_csv(tmp_path, [("cat", 2), ("bee", 1), ("cat", 1)])
    data = read_labelled(held_out, tmp_path / "pics", image_column="file", label_column="kind")
    assert data.named and data.classes.names == ("bee", "cat") and data.labels.tolist() == [1, 0, 1]
    matched = for_model(data, ABC, "m.onnx")
    assert matched.classes == ABC and matched.labels.tolist() == [2, 1, 2] and not matched.named
    with pytest.raises(
        BitmojiError, match=r"labels images 'cat', which the model m.onnx does not tell apart"
    ):
        for_model(data, Classes(("ant", "bee")), "m.onnx")


def test_evaluate_cli_scores_a_csv_of_class_names(three_class, tmp_path: Path) -> None:
    model, _ = three_class
    held_out = named_csv(tmp_path / "held", [("cat", 2), ("bee", 1), ("cat", 1), ("ant", 0)])
    arguments = [
        "evaluate",
        "--model",
        str(model),
        "--labels",
        str(held_out),
        "--images",
        str(held_out.parent / "pics"),
    ]
    arguments += [
        "--image-column",
        "file",
        "--label-column",
        "kind",
        "--no-log",
        "--output",
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(cli.app, [*arguments, "--threads", "1"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["label"] for row in rows] == ["cat", "bee", "cat", "ant"]
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["accuracy"] == pytest.approx(3 / 4)
    assert summary["confusion_matrix"]["counts"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    result = CliRunner().invoke(cli.app, [*arguments[:-2], "--label-column", "nope", "--threads", "1"])
    assert result.exit_code == 1 and "has no column(s) 'nope'" in result.output
