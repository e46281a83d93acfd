"""The training loop and its state without MLflow: `fit` against a fake tracker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bitmoji_ml.checkpoints import TRAIN_STATE, read_checkpoint
from bitmoji_ml.models.normalize import Classifier
from bitmoji_ml.plots import training_plots
from bitmoji_ml.recipe import Recipe
from bitmoji_ml.training import loop
from bitmoji_ml.training.data import TrainData
from bitmoji_ml.training.evaluate import INFERENCE_BATCH, EvaluationResult, evaluate, predict_probabilities
from bitmoji_ml.training.loop import TrainResult, fit
from bitmoji_ml.training.settings import preprocess_for, resolve_config
from bitmoji_ml.training.state import TrainState, new_train_state

pytestmark = pytest.mark.usefixtures("single_torch_thread")
SIZE = 24


class FakeTracker:
    """Records what the loop reports; checkpoints 'live' where the loop wrote them, copied."""

    def __init__(self, folder: Path, interrupt_after: int | None = None) -> None:
        self.folder = folder
        self.interrupt_after = interrupt_after  # epochs, then Ctrl-C once last.pt is logged
        self.epochs: list[dict] = []
        self.artifacts: dict[str, list[str]] = {}

    def log_epoch(self, *, epoch, metrics, best_checkpoint, model_name) -> str:
        self.epochs.append({"epoch": epoch, "metrics": metrics, "best": best_checkpoint is not None})
        return str(self.log_checkpoint(best_checkpoint)) if best_checkpoint else ""

    def log_checkpoint(self, path: Path) -> str:
        kept = self.folder / f"{len(self.epochs)}-{path.name}"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_bytes(path.read_bytes())
        if path.name == "last.pt" and len(self.epochs) == self.interrupt_after:
            raise KeyboardInterrupt
        return str(kept)

    def log_plots(self, history, *, best_epoch, confusion, class_names) -> None:
        folder = self.folder / "plots"
        folder.mkdir(parents=True, exist_ok=True)
        kwargs = {"best_epoch": best_epoch, "confusion": confusion, "class_names": class_names}
        training_plots(folder, history, **kwargs)
        self.artifacts["plots"] = sorted(path.name for path in folder.iterdir())


def synthetic_data(n_train: int = 40, n_val: int = 12, seed: int = 0) -> TrainData:
    """Learnable images: class 1 is bluish, class 0 reddish, plus noise."""
    rng = np.random.default_rng(seed)

    def images(labels: np.ndarray) -> np.ndarray:
        base = np.where(labels[:, None] == 1, [[60, 90, 200]], [[210, 90, 100]])[:, None, None, :]
        noisy = base + rng.normal(0, 30, size=(len(labels), SIZE, SIZE, 3))
        return np.clip(noisy, 0, 255).astype(np.uint8)

    train_labels = np.arange(n_train, dtype=np.int64) % 2
    val_labels = np.arange(n_val, dtype=np.int64) % 2
    return TrainData(images(train_labels), train_labels, images(val_labels), val_labels, {"digest": "d"})


def config(**changes) -> Recipe:
    values = {"image_size": SIZE, "epochs": 3, "batch_size": 8, "threads": 1, "device": "cpu", **changes}
    return resolve_config(Recipe(**values))


def fresh_state(settings: Recipe, data: TrainData) -> TrainState:
    steps = -(-len(data.train_labels) // settings.batch_size)
    return new_train_state(settings, preprocess_for(settings), torch.device("cpu"), steps, len(data.classes))


def run_fit(
    settings: Recipe,
    data: TrainData,
    state: TrainState,
    folder: Path,
    interrupt_after: int | None = None,
) -> tuple[TrainResult, FakeTracker]:
    tracker = FakeTracker(folder / "logged", interrupt_after)
    (folder / "work").mkdir(parents=True, exist_ok=True)
    header = {"model": settings.model, "config": settings.values(), "preprocess": {}}
    result = fit(
        config=settings, data=data, state=state, tracker=tracker, workdir=folder / "work", header=header
    )
    return result, tracker


def weights(model: Classifier) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def test_resuming_from_a_saved_state_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    data, settings = synthetic_data(), config()  # the default one-cycle schedule
    straight = fresh_state(settings, data)
    straight_result, _ = run_fit(settings, data, straight, tmp_path / "straight")

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C once epoch 1's last.pt is stored
        run_fit(settings, data, fresh_state(settings, data), tmp_path / "first", interrupt_after=1)
    torch.manual_seed(12345)  # whatever the process did in between must not matter
    resumed = fresh_state(settings, data)
    resumed.load_state_dict(read_checkpoint(tmp_path / "first" / "logged" / "1-last.pt")[TRAIN_STATE])
    assert resumed.epoch == 1
    resumed_result, _ = run_fit(settings, data, resumed, tmp_path / "resumed")

    keys = ("epoch", "train_loss", "train_objective", "train_acc", "val_loss", "val_acc", "lr")
    rows = [{key: row[key] for key in keys} for row in resumed_result.history]
    assert rows == [{key: row[key] for key in keys} for row in straight_result.history]
    for key, tensor in weights(straight.evaluated).items():
        assert torch.equal(tensor, resumed.evaluated.state_dict()[key]), key
    assert resumed.step == straight.step == 15
    assert resumed_result.best["epoch"] == straight_result.best["epoch"]


def test_state_dict_round_trip_restores_every_part(tmp_path: Path) -> None:
    data, settings = synthetic_data(), config(epochs=2)
    state = fresh_state(settings, data)
    run_fit(settings, data, state, tmp_path)
    saved = state.state_dict()
    other = fresh_state(settings, data)
    other.load_state_dict(saved)
    restored = other.state_dict()
    assert restored["epoch"] == 2 and restored["step"] == state.step == 10
    assert restored["history"] == saved["history"] and restored["best"] == saved["best"]
    assert restored["best_confusion"] == saved["best_confusion"]
    assert restored["schedule"] == saved["schedule"]
    for part in ("model", "ema"):
        for key, tensor in saved[part].items():
            assert torch.equal(restored[part][key], tensor), (part, key)
    assert restored["optimizer"]["state"].keys() == saved["optimizer"]["state"].keys()
    # A fresh state really is different (the round trip is not trivially true).
    assert fresh_state(settings, data).state_dict()["step"] == 0


def test_train_loss_is_plain_cross_entropy_and_the_objective_is_smoothed(tmp_path: Path) -> None:
    data = synthetic_data()
    smoothed, _ = run_fit(config(epochs=2), data, fresh_state(config(epochs=2), data), tmp_path / "a")
    plain_settings = config(epochs=2, label_smoothing=0.0)
    plain, _ = run_fit(plain_settings, data, fresh_state(plain_settings, data), tmp_path / "b")
    for row in plain.history:
        assert row["train_loss"] == pytest.approx(row["train_objective"], rel=1e-5)
    # Label smoothing adds a penalty on confident predictions: the objective is larger.
    assert all(row["train_objective"] > row["train_loss"] for row in smoothed.history)


def test_fit_reports_each_epoch_best_checkpoints_and_plots(tmp_path: Path) -> None:
    data, settings = synthetic_data(), config(epochs=3)
    result, tracker = run_fit(settings, data, fresh_state(settings, data), tmp_path)
    assert [entry["epoch"] for entry in tracker.epochs] == [1, 2, 3]
    expected = {"train_loss", "train_objective", "train_acc", "val_loss", "val_acc", "lr"}
    assert all(expected <= set(entry["metrics"]) for entry in tracker.epochs)
    assert tracker.epochs[0]["best"]
    best = read_checkpoint(result.best_checkpoint)
    assert best["epoch"] == result.best["epoch"] and TRAIN_STATE not in best
    last = read_checkpoint(tmp_path / "work" / "last.pt")
    assert last[TRAIN_STATE]["epoch"] == 3 and last["metrics"]["epoch"] == 3
    assert tracker.artifacts == {"plots": ["confusion_matrix.png", "learning_curves.png"]}


def test_patience_stops_early_and_ties_go_to_the_lower_loss(tmp_path: Path, monkeypatch) -> None:
    scripted = iter([(0.5, 0.9), (0.75, 0.6), (0.75, 0.5), (0.75, 0.55), (0.5, 0.4), (1.0, 0.1)])

    def scripted_evaluate(*_args) -> EvaluationResult:
        accuracy, loss = next(scripted)
        return EvaluationResult(
            loss, accuracy, np.zeros((0, 2)), np.eye(2, dtype=np.int64), np.zeros(0, np.int64)
        )

    monkeypatch.setattr(loop, "evaluate", scripted_evaluate)
    data, settings = synthetic_data(), config(epochs=6, patience=2)
    result, tracker = run_fit(settings, data, fresh_state(settings, data), tmp_path)
    assert result.best["epoch"] == 3  # same accuracy as epoch 2, lower loss
    assert [entry["best"] for entry in tracker.epochs] == [True, True, True, False, False]
    assert len(result.history) == 5  # epochs 4 and 5 did not improve: stop before 6


def test_evaluate_scores_and_counts_like_the_predictions(tmp_path: Path) -> None:
    data, settings = synthetic_data(n_val=INFERENCE_BATCH + 7), config()
    model = fresh_state(settings, data).model
    result = evaluate(model, data.val_images, data.val_labels, torch.device("cpu"))
    predicted = result.probabilities.argmax(1)
    assert result.probabilities.shape == (len(data.val_labels), 2)
    assert np.allclose(result.probabilities.sum(1), 1, atol=1e-6)
    assert result.accuracy == pytest.approx((predicted == data.val_labels).mean())
    expected_loss = -np.log(result.probabilities[np.arange(len(predicted)), data.val_labels]).mean()
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)
    for true in (0, 1):
        for guess in (0, 1):
            count = int(((data.val_labels == true) & (predicted == guess)).sum())
            assert result.confusion[true, guess] == count
    assert result.confusion.sum() == len(data.val_labels)
    # Batched inference gives what one big batch gives.
    with torch.no_grad():
        whole = torch.softmax(model.eval()(torch.from_numpy(data.val_images)), dim=1).numpy()
    assert np.allclose(predict_probabilities(model, data.val_images, torch.device("cpu")), whole, atol=1e-6)
