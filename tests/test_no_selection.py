"""Training without selection on validation: `fit(select_best=False)` keeps the last epoch (the
`cv` folds), and without validation images at all (`train --all-labelled`) it still trains,
logs train metrics and a learning curve, and keeps the last epoch. Fake tracker, no MLflow."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_training_loop import FakeTracker, config, fresh_state, synthetic_data

from bitmoji_ml.checkpoints import read_checkpoint
from bitmoji_ml.training import loop
from bitmoji_ml.training.evaluate import EvaluationResult

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def run(settings, data, folder: Path, select_best: bool):
    tracker = FakeTracker(folder / "logged")
    (folder / "work").mkdir(parents=True, exist_ok=True)
    header = {"model": settings.model, "config": settings.values(), "preprocess": {}}
    result = loop.fit(
        config=settings,
        data=data,
        state=fresh_state(settings, data),
        tracker=tracker,
        workdir=folder / "work",
        header=header,
        select_best=select_best,
    )
    return result, tracker


def test_without_selection_the_last_epoch_is_best_pt_even_when_an_earlier_one_scored_higher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = iter([(1.0, 0.1), (0.5, 0.9), (0.75, 0.6)])  # the first epoch scores best

    def scripted_evaluate(*_args) -> EvaluationResult:
        accuracy, loss = next(scripted)
        return EvaluationResult(
            loss, accuracy, np.zeros((0, 2)), np.eye(2, dtype=np.int64), np.zeros(0, np.int64)
        )

    monkeypatch.setattr(loop, "evaluate", scripted_evaluate)
    data, settings = synthetic_data(), config(epochs=3, patience=1)
    result, tracker = run(settings, data, tmp_path, select_best=False)
    assert [entry["best"] for entry in tracker.epochs] == [False, False, True]
    assert len(result.history) == 3  # patience selects on val_acc: it does not apply
    assert result.best["epoch"] == 3 and result.best["val_acc"] == 0.75
    assert read_checkpoint(result.best_checkpoint)["epoch"] == 3


def test_without_validation_images_training_runs_on_train_metrics_alone(tmp_path: Path) -> None:
    data = dataclasses.replace(synthetic_data(), val_images=None, val_labels=None)
    settings = config(epochs=2)
    result, tracker = run(settings, data, tmp_path, select_best=False)
    assert [entry["best"] for entry in tracker.epochs] == [False, True]
    for entry in tracker.epochs:
        assert {"train_loss", "train_acc", "lr"} <= set(entry["metrics"])
        assert not any(key.startswith("val_") for key in entry["metrics"])
    assert result.best["epoch"] == 2
    assert tracker.artifacts == {"plots": ["learning_curves.png"]}  # no validation confusion matrix
