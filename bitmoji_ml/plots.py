"""PNG figures for MLflow and `evaluate` (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter, PercentFormatter  # noqa: E402

from bitmoji_ml.data.classes import BITMOJI_NAMES, predicted_indices  # noqa: E402


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


RIGHT_COLOUR, WRONG_COLOUR = "tab:blue", "tab:red"
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


def training_plots(
    folder: Path,
    history: Sequence[dict[str, float]],
    *,
    best_epoch: int,
    confusion: np.ndarray | None,
    class_names: Sequence[str],
) -> None:
    """A training run's plots in `folder`: the learning curves, and the best epoch's validation
    confusion matrix when it has one (a run without validation has none)."""
    learning_curves(history, folder / "learning_curves.png", best_epoch=best_epoch)
    if confusion is not None:
        confusion_matrix_plot(np.asarray(confusion), folder / "confusion_matrix.png", class_names=class_names)


def confusion_matrix_plot(
    matrix: np.ndarray, path: Path, title: str = "validation", class_names: Sequence[str] | None = None
) -> Path:
    """`confusion_matrix_figure` saved as a PNG."""
    return _save(confusion_matrix_figure(matrix, title, class_names), path)


def confusion_matrix_figure(
    matrix: np.ndarray, title: str, class_names: Sequence[str] | None = None
) -> plt.Figure:
    """N x N confusion matrix, rows = true class, columns = predicted class, each cell its count.
    A cell's colour is its share of the true class's row (its recall, on the diagonal), so a
    small class's errors show as plainly as a large one's. Without `class_names`, a 2 x 2 matrix
    is Bitmoji's (female, male) and a larger one is labelled with the class indices."""
    count = len(matrix)
    if class_names is None:
        class_names = BITMOJI_NAMES if count == 2 else [str(index) for index in range(count)]
    if len(class_names) != count or matrix.shape != (count, count):
        raise ValueError(f"a confusion matrix of shape {matrix.shape} for {len(class_names)} class names")
    side = max(4.5, 0.55 * count + 2.5)
    figure, axis = plt.subplots(figsize=(side, side * 0.9))
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    axis.imshow(share, cmap="Blues", vmin=0, vmax=1)
    size = 14 if count <= 3 else 10 if count <= 6 else 8
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if share[row, column] > 0.5 else "black"
        axis.text(column, row, str(int(value)), ha="center", va="center", color=colour, fontsize=size)
    turned = count > 3 or max(len(name) for name in class_names) > 8
    axis.set_xticks(
        range(count), class_names, rotation=45 if turned else 0, ha="right" if turned else "center"
    )
    axis.set_yticks(range(count), class_names)
    axis.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({title})")
    return figure


def roc_curve_plot(fpr: np.ndarray, tpr: np.ndarray, auc: float, path: Path, positive: str = "male") -> Path:
    """ROC curve of a two-class model, `positive` (class 1) the positive class."""
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.plot(fpr, tpr, label=f"AUC {auc:.4f}")
    axis.plot([0, 1], [0, 1], "--", color="grey")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({positive})")
    axis.legend(loc="lower right")
    return _save(figure, path)


def probability_histogram(
    probabilities: np.ndarray, labels: np.ndarray, path: Path, class_names: Sequence[str] = BITMOJI_NAMES
) -> Path:
    """`probability_figure` saved as a PNG."""
    return _save(probability_figure(probabilities, labels, class_names), path)


def probability_figure(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> plt.Figure:
    """Two classes: P(class 1) in one colour per true class (the decision is at 0.5). More: one
    panel per true class, see `true_class_histograms`."""
    if len(class_names) > 2:
        return true_class_histograms(probabilities, labels, class_names)
    figure, axis = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 41)
    for index, name in enumerate(class_names):
        axis.hist(probabilities[labels == index, 1], bins=bins, alpha=0.6, label=f"true {name}")
    axis.set(xlabel=f"P({class_names[1]})", ylabel="images", title="probability by true class", yscale="log")
    axis.legend()
    return figure


def true_class_histograms(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str], columns: int = 5
) -> plt.Figure:
    """Per true class, the histogram of the probability the model gave that class, right and
    wrong predictions stacked in two colours.

    The true class's probability, not the predicted one's: it is what the log loss averages
    and what the hardest faces and the label audit rank by, and it separates right from wrong
    (above 0.5 always right, below 1/N always wrong), while P(predicted class) is high for a
    confident mistake and a confident hit alike."""
    count = len(class_names)
    columns = min(columns, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.8 * columns, 2.3 * rows + 0.6), sharex=True, sharey=True, squeeze=False
    )
    right = predicted_indices(probabilities) == labels
    true_prob = probabilities[np.arange(len(labels)), labels]
    for index, axis in enumerate(axes.flat):
        if index >= count:
            axis.axis("off")
            continue
        mine = labels == index
        _true_class_panel(axis, true_prob[mine & right], true_prob[mine & ~right], count)
        axis.set_title(
            f"true {class_names[index]} ({int(mine.sum())}, {int((mine & ~right).sum())} wrong)", fontsize=9
        )
    tallest = max((bar.get_y() + bar.get_height() for axis in axes.flat for bar in axis.patches), default=1)
    axes[0, 0].set_ylim(0.7, 1.5 * tallest)  # shared: one scale for every class
    for axis in axes[-1]:
        axis.set_xlabel("P(true class)")
    for axis in axes[:, 0]:
        axis.set_ylabel("images")
    handles = [Patch(color=RIGHT_COLOUR, label="right"), Patch(color=WRONG_COLOUR, label="wrong")]
    figure.legend(handles=handles, loc="upper right", fontsize=8)
    figure.suptitle(f"probability of the true class (dotted: 1/{count}, 0.5)", fontsize=10)
    return figure


def _true_class_panel(axis: plt.Axes, right: np.ndarray, wrong: np.ndarray, count: int) -> None:
    """One class's histogram of P(true class), right over wrong, lines at 1/N and 0.5."""
    for line in (1 / count, 0.5):
        axis.axvline(line, color="grey", linestyle=":", linewidth=1)
    axis.set_xlim(0, 1)
    if not len(right) + len(wrong):
        axis.text(0.5, 0.5, "no images", ha="center", va="center", transform=axis.transAxes)
        return
    bins = np.linspace(0, 1, 21)
    axis.hist([right, wrong], bins=bins, stacked=True, color=[RIGHT_COLOUR, WRONG_COLOUR])
    # a log axis keeps the few wrong ones visible beside a tall bar of right ones at 1
    axis.set_yscale("log")
    axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axis.yaxis.set_minor_formatter(NullFormatter())


def face_grid(
    images: Sequence[np.ndarray], captions: Sequence[str], path: Path, title: str, columns: int = 6
) -> Path:
    """A grid of faces with a caption under each (e.g. the misclassified ones)."""
    count = max(1, len(images))
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.6 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions, strict=False):
        axis.imshow(image)
        axis.set_title(caption, fontsize=8)
    if not images:
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center")
    figure.suptitle(title)
    return _save(figure, path)
