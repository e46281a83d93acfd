"""PNG figures for MLflow and `evaluate` (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullFormatter, PercentFormatter  # noqa: E402

from bitmoji_ml.data.labels import CLASS_NAMES  # noqa: E402


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


ACCURACY_CEILING = 0.9999  # 100 % is infinitely far up a logit axis: plot it here


def learning_curve_figure(history: Sequence[dict[str, float]], best_epoch: int) -> plt.Figure:
    """Cross-entropy (train and val, both without label smoothing) and accuracy per epoch.

    Accuracy uses a logit axis, on which 90, 99 and 99.9 % are evenly spaced, so the top
    of the curve stays readable; the best epoch is marked on both panels."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 4))
    shown = [(key, style) for key, style in (("train", "-o"), ("val", "-s")) if f"{key}_loss" in history[0]]
    for key, style in shown:
        loss_axis.plot(epochs, [row[f"{key}_loss"] for row in history], style, label=key)
        accuracy = np.clip([row[f"{key}_acc"] for row in history], 1 - ACCURACY_CEILING, ACCURACY_CEILING)
        acc_axis.plot(epochs, accuracy, style, label=key)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy (no label smoothing)", title="loss", yscale="log")
    acc_axis.set_yscale("logit")
    acc_axis.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=None))
    acc_axis.yaxis.set_minor_formatter(NullFormatter())
    acc_axis.set(xlabel="epoch", ylabel="accuracy (logit scale)", title="accuracy")
    for axis in (loss_axis, acc_axis):
        axis.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend()
    return figure


def learning_curves(history: Sequence[dict[str, float]], path: Path, *, best_epoch: int) -> Path:
    """`learning_curve_figure` saved as a PNG."""
    return _save(learning_curve_figure(history, best_epoch), path)


def confusion_matrix_plot(matrix: np.ndarray, path: Path, title: str = "validation") -> Path:
    """2x2 confusion matrix, rows = true class, columns = predicted class."""
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        axis.text(column, row, str(int(count)), ha="center", va="center", color=colour, fontsize=14)
    axis.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    axis.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    axis.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({title})")
    return _save(figure, path)


def roc_curve_plot(fpr: np.ndarray, tpr: np.ndarray, auc: float, path: Path) -> Path:
    """ROC curve for the male class."""
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.plot(fpr, tpr, label=f"AUC {auc:.4f}")
    axis.plot([0, 1], [0, 1], "--", color="grey")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (male)")
    axis.legend(loc="lower right")
    return _save(figure, path)


def probability_histogram(prob_male: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """Histogram of P(male), one colour per true class."""
    figure, axis = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 41)
    for index, name in enumerate(CLASS_NAMES):
        axis.hist(prob_male[labels == index], bins=bins, alpha=0.6, label=f"true {name}")
    axis.set(xlabel="P(male)", ylabel="images", title="probability by true class", yscale="log")
    axis.legend()
    return _save(figure, path)


def face_grid(
    images: Sequence[np.ndarray], captions: Sequence[str], path: Path, title: str, columns: int = 6
) -> Path:
    """A grid of faces with a caption under each (e.g. the misclassified ones)."""
    count = max(1, len(images))
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions, strict=False):
        axis.imshow(image)
        axis.set_title(caption, fontsize=8)
    if not images:
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center")
    figure.suptitle(title)
    return _save(figure, path)
