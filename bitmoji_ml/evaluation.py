"""`bitmoji evaluate`: score an exported ONNX model on a labelled set, draw the plots, and log
the result as an MLflow evaluation run.

Metrics come from scikit-learn on class indices (1 = male, the positive class) and P(male).
Prediction goes through onnxruntime, never torch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn import metrics as sk

from bitmoji_ml import paths
from bitmoji_ml.data.labels import CLASS_NAMES, MALE_THRESHOLD, predicted_classes
from bitmoji_ml.errors import BitmojiError

if TYPE_CHECKING:
    from bitmoji_ml.tracking.evaluations import EvaluationRun
    from bitmoji_ml.tracking.registry import ResolvedModel
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)

LOG_LOSS_EPSILON = 1e-7  # float32 probabilities reach exactly 0 or 1; clip before the log
GRID_FACES = 24
BATCH = 256
CLASSES = [0, 1]  # female, male: stated so a one-class set still gives a 2x2 matrix
PLOT_FILES = ("confusion_matrix.png", "roc_curve.png", "probability_histogram.png", "faces.png")


# --- metrics (scikit-learn) -----------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """2x2 counts, rows = true class, columns = predicted class (index 0 female, 1 male)."""
    return sk.confusion_matrix(labels, predicted, labels=CLASSES)


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Share of correct predictions."""
    return float(sk.accuracy_score(labels, predicted))


def precision(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Of the faces called male, the share that are male (0 when none is called male)."""
    return float(sk.precision_score(labels, predicted, labels=CLASSES, zero_division=0))


def recall(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Of the male faces, the share called male (0 when there are none)."""
    return float(sk.recall_score(labels, predicted, labels=CLASSES, zero_division=0))


def f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Harmonic mean of precision and recall (0 when both are 0)."""
    return float(sk.f1_score(labels, predicted, labels=CLASSES, zero_division=0))


def roc_auc(labels: np.ndarray, prob_male: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random male face scores above a random
    female one, ties counting half. NaN when the set holds a single class."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(sk.roc_auc_score(labels, prob_male))


def roc_curve(labels: np.ndarray, prob_male: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) from (0, 0) to (1, 1), one point per distinct
    score, thresholds falling."""
    fpr, tpr, _ = sk.roc_curve(labels, prob_male, pos_label=1, drop_intermediate=False)
    return fpr, tpr


def log_loss(labels: np.ndarray, prob_male: np.ndarray, epsilon: float = LOG_LOSS_EPSILON) -> float:
    """Mean binary cross-entropy, probabilities clipped to [epsilon, 1 - epsilon]."""
    prob = np.clip(np.asarray(prob_male, dtype=np.float64), epsilon, 1 - epsilon)
    return float(sk.log_loss(labels, prob, labels=CLASSES))


def classification_metrics(labels: np.ndarray, prob_male: np.ndarray) -> dict[str, float]:
    """Every scalar `evaluate` reports, under the names it logs to MLflow."""
    predicted = predicted_classes(prob_male)
    return {
        "accuracy": accuracy(labels, predicted),
        "precision": precision(labels, predicted),
        "recall": recall(labels, predicted),
        "f1": f1(labels, predicted),
        "roc_auc": roc_auc(labels, prob_male),
        "log_loss": log_loss(labels, prob_male),
        "images": float(len(labels)),
        "misclassified": float((predicted != np.asarray(labels)).sum()),
    }


# --- the labelled set ----------------------------------------------------------------------


@dataclasses.dataclass
class LabelledSet:
    """Images with class indices, the file they came from and a short name for run names."""

    paths: list[Path]
    labels: np.ndarray
    source: Path
    name: str


def read_labelled(labels_file: Path, images_dir: Path | None = None) -> LabelledSet:
    """A `prepare` list (`<path> <0|1>`) or, for a .csv, a train.csv-format file whose images
    are in `images_dir` [default: trainimages/ beside the CSV, else the CSV's folder]."""
    from bitmoji_ml.data.dataset import TRAIN_IMAGES, read_labels
    from bitmoji_ml.data.lists import read_list

    labels_file = Path(labels_file)
    if labels_file.suffix.lower() == ".csv":
        if images_dir is None:
            beside = labels_file.parent / TRAIN_IMAGES
            images_dir = beside if beside.is_dir() else labels_file.parent
        samples = read_labels(labels_file, Path(images_dir))
        entries = [(sample.path, sample.label) for sample in samples]
    else:
        if not labels_file.is_file():
            raise BitmojiError(f"list {labels_file} not found: run `bitmoji prepare` or pass --labels")
        entries = read_list(labels_file)
    missing = [str(path) for path, _ in entries if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        hint = " (pass --images for the CSV's image folder)" if labels_file.suffix.lower() == ".csv" else ""
        raise BitmojiError(f"{len(missing)} image(s) of {labels_file} not found{hint}: {shown}")
    return LabelledSet(
        [path for path, _ in entries],
        np.array([label for _, label in entries], dtype=int),
        labels_file,
        labels_file.stem,
    )


# --- files ---------------------------------------------------------------------------------


def hardest_faces(
    labels: np.ndarray, prob_male: np.ndarray, limit: int = GRID_FACES
) -> tuple[np.ndarray, str]:
    """Indices of the misclassified faces, most confidently wrong first; when none is wrong,
    the least confident ones. Also returns a title saying which."""
    wrong = np.nonzero(predicted_classes(prob_male) != labels)[0]
    if len(wrong):
        distance = np.abs(prob_male[wrong] - labels[wrong])
        chosen = wrong[np.argsort(-distance, kind="mergesort")][:limit]
        return chosen, f"misclassified: {len(wrong)} of {len(labels)}" + (
            f" (worst {limit} shown)" if len(wrong) > limit else ""
        )
    chosen = np.argsort(np.abs(prob_male - MALE_THRESHOLD), kind="mergesort")[:limit]
    return chosen, f"none misclassified; the {len(chosen)} least confident"


def predictions_csv(data: LabelledSet, prob_male: np.ndarray) -> str:
    """`image,label,prob_male` rows through the csv module (paths may hold commas or quotes)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "label", "prob_male"])
    for path, label, prob in zip(data.paths, data.labels, prob_male, strict=True):
        writer.writerow([str(path), int(label), f"{prob:.6f}"])
    return text.getvalue()


def write_files(
    folder: Path, data: LabelledSet, prob_male: np.ndarray, images: np.ndarray, metrics: dict[str, float]
) -> list[Path]:
    """The four plots, metrics.json (with the confusion matrix) and predictions.csv in `folder`."""
    from bitmoji_ml import plots
    from bitmoji_ml.files import write_text_atomic

    labels = data.labels
    matrix = confusion_matrix(labels, predicted_classes(prob_male))
    fpr, tpr = roc_curve(labels, prob_male)
    chosen, title = hardest_faces(labels, prob_male)
    captions = [
        f"{data.paths[i].name}\ntrue {CLASS_NAMES[labels[i]]}, P(male) {prob_male[i]:.2f}" for i in chosen
    ]
    written = [
        plots.confusion_matrix_plot(matrix, folder / PLOT_FILES[0], title=data.name),
        plots.roc_curve_plot(fpr, tpr, metrics["roc_auc"], folder / PLOT_FILES[1]),
        plots.probability_histogram(prob_male, labels, folder / PLOT_FILES[2]),
        plots.face_grid([images[i] for i in chosen], captions, folder / PLOT_FILES[3], title),
    ]
    summary = {
        **metrics,
        "confusion_matrix": {"rows_true_columns_predicted": list(CLASS_NAMES), "counts": matrix.tolist()},
    }
    write_text_atomic(folder / "metrics.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(folder / "predictions.csv", predictions_csv(data, prob_male))
    return [*written, folder / "metrics.json", folder / "predictions.csv"]


def metrics_table(metrics: dict[str, float], matrix: np.ndarray) -> str:
    """The metrics, then the confusion matrix, as terminal tables."""
    from bitmoji_ml.report import format_table

    names = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
    scores = format_table(["metric", "value"], [[name, metrics[name]] for name in names])
    confusion = format_table(
        ["true \\ predicted", *CLASS_NAMES],
        [[CLASS_NAMES[row], *(int(count) for count in matrix[row])] for row in range(2)],
    )
    return f"{scores}\n\n{confusion}"


# --- the job -------------------------------------------------------------------------------


@dataclasses.dataclass
class EvaluationResult:
    """What `evaluate_job` measured, the files it kept (only with `output_dir`) and the
    evaluation run it logged (None with `log_run=False`)."""

    metrics: dict[str, float]
    confusion_matrix: np.ndarray
    files: list[Path]
    run_id: str | None


def _resolve_model(
    model: Path | None, run_id: str | None, folder: Path, store: Store | None
) -> ResolvedModel:
    """--model, else --run-id's export, else the registry's @champion."""
    from bitmoji_ml.tracking import registry
    from bitmoji_ml.tracking.store import Store

    if model is not None:
        if not Path(model).is_file():
            raise BitmojiError(f"model {model} not found: run `bitmoji export-onnx` first (or fix --model)")
        return registry.ResolvedModel(Path(model), Path(model).name, str(Path(model).resolve()))
    if run_id is not None:
        return registry.run_onnx(store or Store.open(), run_id=run_id, folder=folder)
    return registry.champion_model(store or Store.open(), folder=folder)


def evaluate_job(
    *,
    model: Path | None = None,
    run_id: str | None = None,
    labels_file: Path | None = None,
    images_dir: Path | None = None,
    lists_dir: Path = paths.LISTS_DIR,
    experiment: str = paths.EXPERIMENT,
    output_dir: Path | None = None,
    log_run: bool = True,
    threads: int = 0,
    store: Store | None = None,
) -> EvaluationResult:
    """Score a model (a file, a run's export or @champion) on a labelled set (`labels_file`,
    default the lists' validation list), keep the plots in `output_dir` and/or log them."""
    from bitmoji_ml.data.cache import decode_all
    from bitmoji_ml.data.lists import LIST_FILES
    from bitmoji_ml.serving.onnx_model import OnnxModel

    if model is not None and run_id is not None:
        raise BitmojiError("give --model or --run-id, not both")
    data = read_labelled(labels_file or Path(lists_dir) / LIST_FILES["val"], images_dir)
    with tempfile.TemporaryDirectory(prefix="bitmoji-evaluate-") as work:
        resolved = _resolve_model(model, run_id, Path(work) / "model", store)
        onnx_model = OnnxModel.load(resolved.path, threads)
        images = decode_all(data.paths, onnx_model.preprocess, threads or None)
        prob_male = onnx_model.predict_batched(images, BATCH).astype(np.float64)
        metrics = classification_metrics(data.labels, prob_male)
        matrix = confusion_matrix(data.labels, predicted_classes(prob_male))
        described = f"{resolved.uri}" + (f" (v{resolved.version})" if resolved.version else "")
        logger.info("evaluated %s on %d images of %s", described, len(data.paths), data.source)
        logger.info("%s", metrics_table(metrics, matrix))

        folder = Path(output_dir) if output_dir else Path(work) / "files"
        folder.mkdir(parents=True, exist_ok=True)
        files = write_files(folder, data, prob_male, images, metrics)
        if output_dir:
            logger.info("wrote %s to %s", ", ".join(path.name for path in files), folder)
        logged_run = None
        if log_run:
            logged = _log(resolved, onnx_model.metadata, data, metrics, folder, experiment, store)
            logged_run = logged.run_id
            logger.info(
                "logged evaluation run %s (eval-%s-%s) to %s",
                logged.run_id,
                resolved.label,
                data.name,
                logged.experiment,
            )
        elif not output_dir:
            logger.info("plots not kept: pass --output, or leave logging on")
    return EvaluationResult(metrics, matrix, files if output_dir else [], logged_run)


def _log(
    resolved: ResolvedModel,
    metadata: dict[str, str],
    data: LabelledSet,
    metrics: dict[str, float],
    folder: Path,
    experiment: str,
    store: Store | None,
) -> EvaluationRun:
    from bitmoji_ml.tracking.datasets import labelled_files
    from bitmoji_ml.tracking.evaluations import log_evaluation
    from bitmoji_ml.tracking.store import Store

    tags = {
        "evaluated_model": resolved.uri,
        "source_run_id": metadata.get("mlflow_run_id", ""),
        "model": metadata.get("model_name", ""),
        "eval_list": str(data.source.resolve()),
    }
    if resolved.model_id:
        tags["evaluated_model_id"] = resolved.model_id
    if resolved.version:
        tags["model_version"] = resolved.version
    # NaN (AUC of a one-class set) is not a value MLflow's SQL stores accept everywhere.
    finite = {key: value for key, value in metrics.items() if np.isfinite(value)}
    dataset = labelled_files(
        split=data.name,
        source=data.source,
        images=[path.name for path in data.paths],
        labels=data.labels.tolist(),
    )
    return log_evaluation(
        store or Store.open(),
        experiment=experiment,
        run_name=f"eval-{resolved.label}-{data.name}",
        metrics=finite,
        folder=folder,
        tags=tags,
        model_id=resolved.model_id,
        dataset=dataset,
    )
