"""cv's out-of-fold confusion matrix names the classes it learnt (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitmoji_ml import plots
from bitmoji_ml.data.classes import Classes
from bitmoji_ml.selection.cv import CrossValidation, FoldResult, log_cv_results
from bitmoji_ml.selection.oof import OutOfFold


class RecordingParent:
    """The ParentRun calls log_cv_results makes, kept instead of sent to MLflow."""

    def __init__(self) -> None:
        self.artifacts: list[str] = []

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.artifacts.append(Path(path).name)


def test_the_oof_confusion_matrix_is_drawn_with_the_class_names(monkeypatch) -> None:
    drawn, original = {}, plots.confusion_matrix_plot

    def draw(matrix, path, title="validation", class_names=None):
        drawn["names"], drawn["shape"] = class_names, matrix.shape
        return original(matrix, path, title=title, class_names=class_names)

    monkeypatch.setattr(plots, "confusion_matrix_plot", draw)
    classes = Classes(("ant", "bee", "cat"))
    probabilities = np.eye(3)[[0, 1, 2, 0, 1, 2]] * 0.8 + 0.2 / 3
    oof = OutOfFold(
        [f"/d/{i}.png" for i in range(6)],
        np.array([0, 1, 2, 0, 1, 2]),
        probabilities,
        np.array([1, 1, 1, 2, 2, 2]),
        classes,
    )
    folds = [FoldResult(k, f"run{k}", 3, 3, 1.0, 0.3, 0, 1.0) for k in (1, 2)]
    parent = RecordingParent()
    log_cv_results(parent, outcome=CrossValidation(folds, oof), seconds={})
    assert drawn == {"names": ("ant", "bee", "cat"), "shape": (3, 3)}
    assert "oof_confusion_matrix.png" in parent.artifacts
