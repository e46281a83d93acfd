"""Batched inference and validation metrics for a PyTorch classifier. Training validates with
`evaluate`; `export.py` compares PyTorch with onnxruntime through `predict_probabilities`."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from bitmoji_ml.data.classes import Classes, predicted_indices
from bitmoji_ml.models.normalize import Classifier

# Images per forward pass when only predicting: 128 validates 600 images in 2/3 of 256's time on
# a 2-core CPU (a 256-image batch's activations outgrow the caches; 64 is no faster than 128).
INFERENCE_BATCH = 128
PROBABILITY_FLOOR = 1e-12  # a probability of exactly 0 would make the log loss infinite


@torch.no_grad()
def predict_probabilities(model: Classifier, images: np.ndarray, device: torch.device) -> np.ndarray:
    """P(class) for uint8 NHWC images, in eval mode, `INFERENCE_BATCH` at a time; shape
    (images, classes)."""
    model.eval()
    outputs = []
    for start in range(0, len(images), INFERENCE_BATCH):
        batch = torch.from_numpy(images[start : start + INFERENCE_BATCH]).to(device)
        outputs.append(torch.softmax(model(batch).float(), dim=1).cpu())
    return torch.cat(outputs).numpy()


@dataclasses.dataclass
class EvaluationResult:
    """A model's predictions on a labelled set and what they score."""

    loss: float  # mean cross-entropy (no label smoothing)
    accuracy: float
    probabilities: np.ndarray  # (images, classes)
    confusion: np.ndarray  # classes x classes counts, rows = true class, columns = predicted class
    labels: np.ndarray  # the true class indices

    def metrics(self, prefix: str, classes: Classes | None = None) -> dict[str, float]:
        """The loss and accuracy as metrics named `<prefix>_loss` and `<prefix>_acc`; given
        `classes` other than Bitmoji's, each class's recall too (`<prefix>_recall_<name>`:
        which classes the accuracy leaves behind). Bitmoji's runs log what they always did."""
        metrics = {f"{prefix}_loss": self.loss, f"{prefix}_acc": self.accuracy}
        if classes is not None and not classes.kaggle:
            from bitmoji_ml.metrics import classification_metrics  # scikit-learn: only here

            scores = classification_metrics(self.labels, self.probabilities, classes)
            metrics.update({f"{prefix}_recall_{name}": scores[f"recall_{name}"] for name in classes.names})
        return metrics


def evaluate(
    model: Classifier, images: np.ndarray, labels: np.ndarray, device: torch.device
) -> EvaluationResult:
    """Loss, accuracy, probabilities and confusion matrix of `model` on `images`."""
    probabilities = predict_probabilities(model, images, device)
    log_probabilities = torch.from_numpy(probabilities).clamp_min(PROBABILITY_FLOOR).log()
    loss = F.nll_loss(log_probabilities, torch.from_numpy(labels)).item()
    predicted = predicted_indices(probabilities)
    return EvaluationResult(
        loss=loss,
        accuracy=float((predicted == labels).mean()),
        probabilities=probabilities,
        confusion=confusion_counts(labels, predicted, probabilities.shape[1]),
        labels=np.asarray(labels),
    )


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """classes x classes counts, rows = true class, columns = predicted class (scikit-learn's
    `confusion_matrix(labels, predicted, labels=range(classes))`, without importing
    scikit-learn, which costs a second at the start of every training run)."""
    pairs = classes * np.asarray(labels, dtype=np.int64) + np.asarray(predicted, dtype=np.int64)
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)
