"""Classification metrics of a scored labelled set of N >= 2 classes, from scikit-learn, under
the names `evaluate` logs to MLflow.

Labels are class indices (class i is `classes.names[i]`), probabilities an (n, N) array whose
column i is P(names[i]); a class is decided by data/classes.py's `predicted_indices`. Bitmoji
(`classes.kaggle`) keeps the binary metrics of round 1 under their names (precision, recall
and f1 of the male class), so its evaluation runs compare with the older ones.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk

from bitmoji_ml.data.classes import Classes, predicted_indices

LOG_LOSS_EPSILON = 1e-7  # float32 probabilities reach exactly 0 or 1; clip before the log
BINARY = [0, 1]  # stated so a one-class set still gives a 2x2 matrix
KAGGLE_SCORES = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """N x N counts, rows = true class, columns = predicted class (class indices); every class
    has its row and column, also when a small set lacks it."""
    return sk.confusion_matrix(labels, predicted, labels=list(range(n_classes)))


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Share of correct predictions."""
    return float(sk.accuracy_score(labels, predicted))


def precision(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Two classes: of the images called class 1 (male), the share that are (0 when none is)."""
    return float(sk.precision_score(labels, predicted, labels=BINARY, zero_division=0))


def recall(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Two classes: of the class-1 (male) images, the share called so (0 when there are none)."""
    return float(sk.recall_score(labels, predicted, labels=BINARY, zero_division=0))


def f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Two classes: harmonic mean of precision and recall (0 when both are 0)."""
    return float(sk.f1_score(labels, predicted, labels=BINARY, zero_division=0))


def roc_auc(labels: np.ndarray, prob_positive: np.ndarray) -> float:
    """Two classes: area under the ROC curve, the chance that a random class-1 image scores
    above a random class-0 one, ties counting half. NaN when the set holds a single class."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(sk.roc_auc_score(labels, prob_positive))


def roc_curve(labels: np.ndarray, prob_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two classes: (false positive rate, true positive rate) from (0, 0) to (1, 1), one point
    per distinct score, thresholds falling."""
    fpr, tpr, _ = sk.roc_curve(labels, prob_positive, pos_label=1, drop_intermediate=False)
    return fpr, tpr


def log_loss(labels: np.ndarray, probabilities: np.ndarray, epsilon: float = LOG_LOSS_EPSILON) -> float:
    """Mean cross-entropy. `probabilities` is (n, N), or P(class 1) for two classes (round 1's
    form, clipped to [epsilon, 1 - epsilon]); an (n, N) array is clipped at epsilon and each row
    scaled back to a sum of 1 (float32 softmax rows miss 1 by more than scikit-learn allows).
    Every class is named, so a small set lacking one still scores."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim == 1:
        clipped = np.clip(probabilities, epsilon, 1 - epsilon)
        return float(sk.log_loss(labels, clipped, labels=BINARY))
    clipped = np.clip(probabilities, epsilon, None)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return float(sk.log_loss(labels, clipped, labels=list(range(probabilities.shape[1]))))


def _kaggle_scores(labels: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Round 1's binary metrics of Bitmoji, male the positive class."""
    prob_male = probabilities[:, 1]
    return {
        "accuracy": accuracy(labels, predicted),
        "precision": precision(labels, predicted),
        "recall": recall(labels, predicted),
        "f1": f1(labels, predicted),
        "roc_auc": roc_auc(labels, prob_male),
        "log_loss": log_loss(labels, prob_male),
    }


def _class_scores(
    labels: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray, classes: Classes
) -> dict[str, float]:
    """Accuracy, macro F1, log loss, precision and recall of each class, ROC AUC for two."""
    every = list(range(len(classes)))
    precisions, recalls, _, _ = sk.precision_recall_fscore_support(
        labels, predicted, labels=every, zero_division=0
    )
    scores = {
        "accuracy": accuracy(labels, predicted),
        # Macro over the classes the set holds or the model predicts (scikit-learn's default):
        # a class absent from both would add a meaningless 0.
        "macro_f1": float(sk.f1_score(labels, predicted, average="macro", zero_division=0)),
        "log_loss": log_loss(labels, probabilities),
    }
    if len(classes) == 2:  # one score per image ranks the images: ROC means something
        scores["roc_auc"] = roc_auc(labels, probabilities[:, 1])
    for index, name in enumerate(classes.names):
        scores[f"precision_{name}"] = float(precisions[index])
        scores[f"recall_{name}"] = float(recalls[index])
    return scores


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, classes: Classes
) -> dict[str, float]:
    """Every scalar `evaluate` reports, under the names it logs to MLflow; `probabilities` is
    (n, len(classes))."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape != (len(labels), len(classes)):
        raise ValueError(
            f"probabilities of shape {probabilities.shape} for {len(labels)} labels of {len(classes)} classes"
        )
    predicted = predicted_indices(probabilities)
    if classes.kaggle:
        scores = _kaggle_scores(labels, probabilities, predicted)
    else:
        scores = _class_scores(labels, probabilities, predicted, classes)
    return {
        **scores,
        "images": float(len(labels)),
        "misclassified": float((predicted != labels).sum()),
    }


def metrics_table(metrics: dict[str, float], matrix: np.ndarray, classes: Classes) -> str:
    """The metrics, the per-class ones as a table of their own (N classes), then the confusion
    matrix with class names, as terminal tables."""
    from bitmoji_ml.report import format_table

    if classes.kaggle:
        names = KAGGLE_SCORES
    else:
        names = [name for name in ("accuracy", "macro_f1", "log_loss", "roc_auc") if name in metrics]
    tables = [format_table(["metric", "value"], [[name, metrics[name]] for name in names])]
    if not classes.kaggle:
        rows = [
            [name, int(matrix[index].sum()), metrics[f"precision_{name}"], metrics[f"recall_{name}"]]
            for index, name in enumerate(classes.names)
        ]
        tables.append(format_table(["class", "images", "precision", "recall"], rows))
    tables.append(
        format_table(
            ["true \\ predicted", *classes.names],
            [[name, *(int(count) for count in matrix[row])] for row, name in enumerate(classes.names)],
        )
    )
    return "\n\n".join(tables)
