"""Classification metrics of a scored labelled set, from scikit-learn on class indices
(1 = male, the positive class) and P(male), under the names `evaluate` logs to MLflow."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk

from bitmoji_ml.data.labels import CLASS_NAMES, predicted_classes

LOG_LOSS_EPSILON = 1e-7  # float32 probabilities reach exactly 0 or 1; clip before the log
CLASSES = [0, 1]  # female, male: stated so a one-class set still gives a 2x2 matrix


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
