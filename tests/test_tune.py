"""`bitmoji tune`: trials as nested MLflow runs, a resumable Optuna study beside the store, the
best recipe as a TOML file that `train --config` reads; pruning through the tracker wrapper."""

from __future__ import annotations

import tomllib
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

import cli
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.recipe import resolve_recipe
from bitmoji_ml.selection.search import SEARCH_SPACE, objective_value, sample_recipe, searched_settings
from bitmoji_ml.selection.trials import TRIAL_STATE_TAG, PruningTracker, TrialEnd, progress_step
from bitmoji_ml.selection.tune import open_study, optuna_storage

FIXED = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--threads", "1"]


def tune(lists: Path, output: Path, *extra: str) -> str:
    arguments = ["tune", "--lists", str(lists), "--experiment", "tune-test", "--output", str(output)]
    result = CliRunner().invoke(cli.app, [*arguments, *FIXED, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def runs_of_kind(client: MlflowClient, kind: str) -> list:
    experiment = client.get_experiment_by_name("tune-test")
    return client.search_runs([experiment.experiment_id], f"tags.run_kind = '{kind}'")


def children_of(client: MlflowClient, run) -> list:
    parent_id = run.info.run_id
    return client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_tune_runs_trials_as_child_runs_and_writes_a_recipe_train_reads(
    tiny_lists: Path, mlflow_store: str, tmp_path: Path
):
    output = tune(tiny_lists, tmp_path / "best.toml", "--trials", "2", "--study", "s1")
    client = MlflowClient()
    (parent,) = runs_of_kind(client, "tune")
    trials = children_of(client, parent)
    assert len(trials) == 2 and all(trial.data.tags["run_kind"] == "tune_trial" for trial in trials)
    assert parent.data.params["objective"] == "val_acc, val_loss tie-break"
    assert parent.data.params["fixed.epochs"] == "1"
    searched = [name for name in SEARCH_SPACE if name not in ("epochs", "image_size", "batch_size")]
    for trial in trials:  # each trial: its params and per-epoch metrics, like a train run
        assert trial.data.params["epochs"] == "1" and trial.data.params["image_size"] == "32"
        assert {name for name in searched} <= set(trial.data.params)
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "val_acc")] == [1]
    best_run = client.get_run(parent.data.tags["best_trial_run_id"])
    recipe = tomllib.loads((tmp_path / "best.toml").read_text())
    for name in searched:  # the file is the best trial's recipe
        assert str(recipe[name]) == best_run.data.params[name], name
    assert parent.data.metrics["best_trial_val_acc"] == best_run.data.metrics["best_val_acc"]
    assert "best_val_acc" not in parent.data.metrics  # `bitmoji runs` ranks training runs by it
    assert f"wrote {tmp_path / 'best.toml'}" in output
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert logged == {"best_config.toml"}

    # `train --config` reads it: the new run has the recipe's values.
    result = CliRunner().invoke(
        cli.app,
        ["train", "--lists", str(tiny_lists), "--config", str(tmp_path / "best.toml"), "--threads", "1"],
    )
    assert result.exit_code == 0, result.output
    config = resolve_recipe(config_file=tmp_path / "best.toml").recipe
    assert all(getattr(config, name) == recipe[name] for name in recipe)

    # The study continues by name: one more trial makes three, under a new parent run.
    tune(tiny_lists, tmp_path / "best.toml", "--trials", "1", "--study", "s1")
    study = optuna.load_study(study_name="s1", storage=optuna_storage(mlflow_store))
    assert len(study.trials) == 3
    assert len(runs_of_kind(client, "tune")) == 2
    assert (Path(mlflow_store[len("sqlite:///") :]).parent / "optuna.db").is_file()


def test_tune_with_cv_scores_trials_by_cross_validation(tiny_lists: Path, mlflow_store: str, tmp_path: Path):
    tune(tiny_lists, tmp_path / "best.toml", "--trials", "1", "--cv", "--folds", "2", "--study", "s2")
    client = MlflowClient()
    (parent,) = runs_of_kind(client, "tune")
    assert parent.data.params["objective"] == "cv_acc, cv_loss tie-break"
    (trial,) = children_of(client, parent)
    assert trial.data.tags["run_kind"] == "tune_trial"
    assert {"cv_acc", "cv_acc_std", "oof_acc"} <= set(trial.data.metrics)
    folds = children_of(client, trial)
    assert sorted(fold.data.params["cv_fold"] for fold in folds) == ["1", "2"]
    assert parent.data.metrics["best_trial_cv_acc"] == trial.data.metrics["cv_acc"]


def test_a_continued_study_keeps_its_objective(tmp_path: Path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    open_study(name="s", storage=storage, objective="val_acc, val_loss tie-break", seed=0)
    with pytest.raises(BitmojiError, match="optimises 'val_acc, val_loss tie-break'"):
        open_study(name="s", storage=storage, objective="cv_acc, cv_loss tie-break", seed=0)


def test_the_study_file_lies_beside_an_sqlite_store(tmp_path: Path):
    assert optuna_storage(f"sqlite:///{tmp_path}/db/mlflow.db") == f"sqlite:///{tmp_path}/db/optuna.db"


def test_the_objective_breaks_ties_by_loss_but_never_outweighs_one_image():
    images = 600
    one_more = objective_value(accuracy=0.5 + 1 / images, loss=100.0, images=images)
    assert one_more > objective_value(accuracy=0.5, loss=0.0, images=images)
    assert objective_value(accuracy=0.9, loss=0.1, images=images) > objective_value(
        accuracy=0.9, loss=0.2, images=images
    )


def test_fixed_settings_and_unscalable_widths_are_not_searched():
    searched = searched_settings(fixed={"lr", "epochs"}, model="compact")
    assert "lr" not in searched and "epochs" not in searched and "width" in searched
    assert "width" not in searched_settings(fixed=set(), model="seed-cnn")
    values = sample_recipe(optuna.trial.FixedTrial({"lr": 0.0012345, "width": 0.5}), ["lr", "width"])
    assert values == {"lr": 0.00123, "width": 0.5}  # 3 significant digits


class FakeRun:
    run_id = "run-1"

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.tags: dict[str, str] = {}

    def log_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_epoch(self, *, epoch, metrics, best_checkpoint, model_name) -> str:
        self.epochs.append(epoch)
        return "best.pt"


class FakeTrial:
    number = 3

    def __init__(self, prune_at: int) -> None:
        self.prune_at = prune_at
        self.reports: list[tuple[float, int]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return self.reports[-1][1] >= self.prune_at


def test_the_pruning_tracker_logs_then_reports_each_epoch_and_stops_when_told():
    run, trial = FakeRun(), FakeTrial(prune_at=2)
    tracker = PruningTracker(run, trial, epochs=10)
    assert tracker.run_id == "run-1"  # everything else is the run's
    metrics = {"val_acc": 0.75, "val_loss": 0.5}
    assert tracker.log_epoch(epoch=1, metrics=metrics, best_checkpoint=None, model_name="m") == "best.pt"
    with pytest.raises(optuna.TrialPruned):
        tracker.log_epoch(epoch=2, metrics=metrics, best_checkpoint=None, model_name="m")
    assert run.epochs == [1, 2]  # the pruned epoch is logged before the trial stops
    assert trial.reports == [(0.75, 1), (0.75, 2)]


def test_trials_of_different_lengths_report_at_the_same_share_of_their_schedule():
    """Defect g: with `epochs` searched, epoch 5 of a 30-epoch one-cycle run (still at a high LR)
    was compared with epoch 5 of a 10-epoch run; now both report at tenths of their schedule."""
    metrics = {"val_acc": 0.75, "val_loss": 0.5}
    reported = {}
    for epochs in (10, 30):
        trial = FakeTrial(prune_at=99)
        tracker = PruningTracker(FakeRun(), trial, epochs=epochs)
        for epoch in range(1, epochs + 1):
            tracker.log_epoch(epoch=epoch, metrics=metrics, best_checkpoint=None, model_name="m")
        reported[epochs] = [step for _, step in trial.reports]
    assert reported[10] == reported[30] == list(range(1, 11))
    assert progress_step(5, 10) == 5 and progress_step(5, 30) == 1 and progress_step(15, 30) == 5


def test_a_pruned_trial_tags_its_run_and_is_handed_back_once_the_run_is_closed():
    run, trial = FakeRun(), FakeTrial(prune_at=1)
    end = TrialEnd()
    with end.recorded(run):
        raise optuna.TrialPruned("val_acc below the median")
    assert run.tags == {TRIAL_STATE_TAG: "PRUNED"}
    with pytest.raises(optuna.TrialPruned, match="below the median"):
        end.raise_if_pruned(trial)
    complete, finished = FakeRun(), TrialEnd()
    with finished.recorded(complete):
        pass
    assert complete.tags == {TRIAL_STATE_TAG: "COMPLETE"}
    finished.raise_if_pruned(trial)  # nothing to hand back
    failed = FakeRun()
    with pytest.raises(ValueError), TrialEnd().recorded(failed):
        raise ValueError("not a pruning")
    assert failed.tags == {}  # other errors fail the run untagged
