"""`bitmoji evaluate`: score an exported ONNX model on a labelled set, draw the plots, and log
the result as an MLflow evaluation run.

Metrics are metrics.py's (scikit-learn), the set is labelled_set.py's, and whether the model
trained on the scored images is training_overlap.py's. Prediction goes through onnxruntime,
never torch.
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

from bitmoji_ml import paths
from bitmoji_ml.data.classes import Classes, predicted_indices
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.labelled_set import LabelledSet, for_model, read_labelled
from bitmoji_ml.metrics import classification_metrics, confusion_matrix, roc_curve
from bitmoji_ml.tracking.mlflow_process import on_store
from bitmoji_ml.tracking.names import TRAINING_IMAGES_TAG, classes_param
from bitmoji_ml.tracking.records import EvaluationRun, ResolvedModel
from bitmoji_ml.training_overlap import TrainingOverlap, training_overlap

if TYPE_CHECKING:
    from bitmoji_ml.tracking.mlflow_process import MlflowProcess
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)

GRID_FACES = 24
BATCH = 256
PLOT_FILES = ("confusion_matrix.png", "roc_curve.png", "probability_histogram.png", "faces.png")
ROC_FILE = PLOT_FILES[1]


def plot_files(classes: Classes) -> tuple[str, ...]:
    """The plots `evaluate` draws: the ROC curve only for two classes, where one score ranks
    the images."""
    return PLOT_FILES if len(classes) == 2 else tuple(name for name in PLOT_FILES if name != ROC_FILE)


# --- files ---------------------------------------------------------------------------------


def true_class_probability(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """P(given class) per image: what the log loss averages and the grid ranks by."""
    return probabilities[np.arange(len(labels)), labels]


def hardest_faces(
    labels: np.ndarray, probabilities: np.ndarray, limit: int = GRID_FACES
) -> tuple[np.ndarray, str]:
    """Indices of the misclassified images, lowest probability of their true class first;
    when none is wrong, the right ones with the lowest (the least confident). Also returns a
    title saying which. (Two classes: the most confidently wrong first, as in round 1.)"""
    order = np.argsort(true_class_probability(labels, probabilities), kind="mergesort")
    wrong = predicted_indices(probabilities) != labels
    if wrong.any():
        chosen = order[wrong[order]][:limit]
        return chosen, f"misclassified: {int(wrong.sum())} of {len(labels)}" + (
            f" (worst {limit} shown)" if wrong.sum() > limit else ""
        )
    chosen = order[:limit]
    return chosen, f"none misclassified; the {len(chosen)} least confident"


def face_captions(
    data: LabelledSet, probabilities: np.ndarray, chosen: np.ndarray, classes: Classes
) -> list[str]:
    """`<file>` over `true X, P(X) 0.12, predicted Y` for each chosen image."""
    predicted = predicted_indices(probabilities)
    true_prob = true_class_probability(data.labels, probabilities)
    names = classes.names
    return [
        f"{data.paths[i].name}\ntrue {names[data.labels[i]]}, P({names[data.labels[i]]}) {true_prob[i]:.2f},"
        f"\npredicted {names[predicted[i]]}"
        for i in chosen
    ]


def predictions_csv(data: LabelledSet, probabilities: np.ndarray, classes: Classes) -> str:
    """`image,label,<classes.prob_columns>` rows through the csv module (paths may hold commas
    or quotes). Bitmoji keeps round 1's `image,label,prob_male` with the label as 0 / 1; other
    sets name the given label's class."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "label", *classes.prob_columns])
    values = classes.prob_values(probabilities)
    for path, label, row in zip(data.paths, data.labels, values, strict=True):
        given = int(label) if classes.kaggle else classes.names[label]
        writer.writerow([str(path), given, *(f"{prob:.6f}" for prob in row)])
    return text.getvalue()


def write_files(
    folder: Path,
    data: LabelledSet,
    probabilities: np.ndarray,
    images: np.ndarray,
    metrics: dict[str, float],
    classes: Classes,
) -> list[Path]:
    """The plots, metrics.json (with the confusion matrix) and predictions.csv in `folder`."""
    from bitmoji_ml import plots
    from bitmoji_ml.files import write_text_atomic

    labels, names = data.labels, classes.names
    matrix = confusion_matrix(labels, predicted_indices(probabilities), len(classes))
    chosen, title = hardest_faces(labels, probabilities)
    captions = face_captions(data, probabilities, chosen, classes)
    written = [
        plots.confusion_matrix_plot(matrix, folder / PLOT_FILES[0], title=data.name, class_names=names)
    ]
    if len(classes) == 2:
        fpr, tpr = roc_curve(labels, probabilities[:, 1])
        written.append(
            plots.roc_curve_plot(fpr, tpr, metrics["roc_auc"], folder / ROC_FILE, positive=names[1])
        )
    written += [
        plots.probability_histogram(probabilities, labels, folder / PLOT_FILES[2], class_names=names),
        plots.face_grid([images[i] for i in chosen], captions, folder / PLOT_FILES[3], title),
    ]
    summary = {
        **metrics,
        "confusion_matrix": {"rows_true_columns_predicted": list(names), "counts": matrix.tolist()},
    }
    write_text_atomic(folder / "metrics.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(folder / "predictions.csv", predictions_csv(data, probabilities, classes))
    return [*written, folder / "metrics.json", folder / "predictions.csv"]


# --- the job -------------------------------------------------------------------------------


@dataclasses.dataclass
class EvaluationResult:
    """What `evaluate_job` measured, the files it kept (only with `output_dir`), the
    evaluation run it logged (None with `log_run=False`) and how many of the scored images the
    model trained on."""

    metrics: dict[str, float]
    confusion_matrix: np.ndarray
    files: list[Path]
    run_id: str | None
    overlap: TrainingOverlap
    classes: Classes  # the scored model's


def _resolve_model(
    model: Path | None, run_id: str | None, experiment: str, folder: Path, store: Store | MlflowProcess | None
) -> ResolvedModel:
    """--model, else --run-id's export, else the @champion of the experiment's registered model."""
    if model is not None:
        if not Path(model).is_file():
            raise BitmojiError(f"model {model} not found: run `bitmoji export-onnx` first (or fix --model)")
        return ResolvedModel(Path(model), Path(model).name, str(Path(model).resolve()))
    if run_id is not None:
        return on_store(store, "bitmoji_ml.tracking.resolve:run_onnx", run_id=run_id, folder=folder)
    return on_store(
        store, "bitmoji_ml.tracking.resolve:champion_model", registered_model=experiment, folder=folder
    )


def evaluate_job(
    *,
    model: Path | None = None,
    run_id: str | None = None,
    labels_file: Path | None = None,
    images_dir: Path | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    lists_dir: Path = paths.LISTS_DIR,
    experiment: str = paths.EXPERIMENT,
    output_dir: Path | None = None,
    log_run: bool = True,
    threads: int = 0,
    store: Store | MlflowProcess | None = None,
) -> EvaluationResult:
    """Score a model (a file, a run's export or @champion) on a labelled set (`labels_file`,
    default the lists' validation list; a CSV of one's own names its columns), keep the plots in
    `output_dir` and/or log them. Every MLflow call goes to `store`: a Store, or an
    MlflowProcess that makes them in its child (`bitmoji evaluate`), else the configured store."""
    from bitmoji_ml.data.cache import decode_all
    from bitmoji_ml.data.lists import LIST_FILES
    from bitmoji_ml.serving.onnx_model import OnnxModel

    if model is not None and run_id is not None:
        raise BitmojiError("give --model or --run-id, not both")
    data = read_labelled(
        labels_file or Path(lists_dir) / LIST_FILES["val"],
        images_dir,
        image_column=image_column,
        label_column=label_column,
    )
    if store is None and (model is None or log_run):  # a file, not logged: no MLflow
        from bitmoji_ml.tracking.store import Store

        store = Store.open()
    from bitmoji_ml import plots  # noqa: F401  (matplotlib, while the MLflow process finds the model)

    with tempfile.TemporaryDirectory(prefix="bitmoji-evaluate-") as work:
        resolved = _resolve_model(model, run_id, experiment, Path(work) / "model", store)
        onnx_model = OnnxModel.load(resolved.path, threads)
        classes = onnx_model.classes
        data = for_model(data, classes, resolved.uri)
        if log_run and resolved.model_id is None:  # a file: the logged model it is, if any
            resolved = _link_file(store, resolved, onnx_model.metadata)
        images = decode_all(data.paths, onnx_model.preprocess, threads or None)
        probabilities = onnx_model.predict_batched(images, BATCH).astype(np.float64)
        metrics = classification_metrics(data.labels, probabilities, classes)
        matrix = confusion_matrix(data.labels, predicted_indices(probabilities), len(classes))
        described = f"{resolved.uri}" + (f" (v{resolved.version})" if resolved.version else "")
        logger.info("evaluated %s on %d images of %s", described, len(data.paths), data.source)
        overlap = _training_overlap(data, onnx_model.metadata, lists_dir, store)
        if overlap.training:
            logger.warning("%s", overlap.message())
        else:
            logger.info("%s", overlap.message())

        folder = Path(output_dir) if output_dir else Path(work) / "files"
        folder.mkdir(parents=True, exist_ok=True)
        files = write_files(folder, data, probabilities, images, metrics, classes)
        if output_dir:
            logger.info("wrote %s to %s", ", ".join(path.name for path in files), folder)
        logged_run = None
        if log_run:
            logged = _log(
                resolved, onnx_model.metadata, data, metrics, folder, experiment, store, overlap, classes
            )
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
    return EvaluationResult(metrics, matrix, files if output_dir else [], logged_run, overlap, classes)


def _link_file(
    store: Store | MlflowProcess, resolved: ResolvedModel, metadata: dict[str, str]
) -> ResolvedModel:
    run_id = metadata.get("mlflow_run_id", "")
    return on_store(store, "bitmoji_ml.tracking.resolve:local_onnx", path=resolved.path, run_id=run_id)


def _training_overlap(
    data: LabelledSet, metadata: dict[str, str], lists_dir: Path, store: Store | MlflowProcess | None
) -> TrainingOverlap:
    """The scored images the model trained on, from its source run's training datasets (with
    no store: from the lists folder, see training_overlap.py)."""
    run_id = metadata.get("mlflow_run_id", "")
    training_lists = "bitmoji_ml.tracking.evaluations:training_lists"
    recorded = on_store(store, training_lists, run_id) if store is not None and run_id else None
    return training_overlap(data.paths, metadata=metadata, lists_dir=lists_dir, recorded=recorded)


def _log(
    resolved: ResolvedModel,
    metadata: dict[str, str],
    data: LabelledSet,
    metrics: dict[str, float],
    folder: Path,
    experiment: str,
    store: Store | MlflowProcess,
    overlap: TrainingOverlap,
    classes: Classes,
) -> EvaluationRun:
    from bitmoji_ml.tracking.datasets import labelled_files

    tags = {
        "evaluated_model": resolved.uri,
        "source_run_id": metadata.get("mlflow_run_id", ""),
        "model": metadata.get("model_name", ""),
        "eval_list": str(data.source.resolve()),
        TRAINING_IMAGES_TAG: overlap.tag,
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
    params = {
        "evaluated_model": resolved.uri,
        "model_version": resolved.version or "-",
        "logged_model_id": resolved.model_id or "-",
        "model": metadata.get("model_name", ""),
        "source_run_id": metadata.get("mlflow_run_id", ""),
        "eval_set": data.name,
        "eval_list": str(data.source.resolve()),
        "images": str(len(data.paths)),
        **classes_param(classes.names),  # as training runs record them: "ant,bee,cat"
    }
    if len(classes) == 2:  # the most probable of two classes: P(class 1) at or above 0.5
        params["threshold"] = "0.5"
    return on_store(
        store,
        "bitmoji_ml.tracking.evaluations:log_evaluation",
        params=params,
        experiment=experiment,
        run_name=f"eval-{resolved.label}-{data.name}",
        metrics=finite,
        folder=folder,
        tags=tags,
        model_id=resolved.model_id,
        dataset=dataset,
    )
