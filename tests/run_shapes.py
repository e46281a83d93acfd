"""An MLflow store holding one run of every kind `bitmoji runs` lists, logged through the same
tracking classes and metric builders the jobs use (no training): two training runs (one
resumed from 20 to 22 epochs), a refit, a torchrun run, a cv run with two folds and a tune run
with two trials. Cheap enough for each test to build its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bitmoji_ml.recipe import SEARCH_SPACE, Recipe
from bitmoji_ml.tracking.datasets import RunDatasets
from bitmoji_ml.tracking.names import CV_FOLD, CV_RUN, RUN_KIND_TAG, TUNE_RUN, TUNE_TRIAL
from bitmoji_ml.tracking.parents import ParentRun
from bitmoji_ml.tracking.runs import TrainingRun
from bitmoji_ml.tracking.store import Store

EXPERIMENT = "shapes"
NO_DATASETS = RunDatasets([], None)


@dataclasses.dataclass
class Shapes:
    """The run ids by role."""

    train: str  # resumed from 20 to 22 epochs, best_val_acc 0.97
    other: str  # lr 0.01, best_val_acc 0.95
    refit: str
    torchrun: str
    cv: str
    folds: list[str]
    tune: str
    trials: list[str]


def _history(epochs: int, *, val: bool = True) -> list[dict[str, float]]:
    return [
        {"epoch": epoch, **({"val_acc": 0.9, "val_loss": 0.3} if val else {})}
        for epoch in range(1, epochs + 1)
    ]


def _summary(epochs: int, *, best: float | None, selected: bool = True, val: bool = True) -> dict:
    from bitmoji_ml.training.job import summary_metrics
    from bitmoji_ml.training.loop import TrainResult

    history = _history(epochs, val=val)
    best_epoch = {"epoch": epochs - 1, "val_acc": best, "val_loss": 0.2} if best is not None else history[-1]
    result = TrainResult(history=history, best=best_epoch, best_checkpoint="", train_seconds=61.7)
    return summary_metrics(result, selected=selected)


def _training(store, experiment_id, name, config, *, parent="", tags=None, world="1", **summary) -> str:
    with TrainingRun(store, experiment_id=experiment_id, run_name=name, parent_run_id=parent or None) as run:
        params = {**config.to_params(), "world_size": world}
        run.log_start(
            params=params, tags={"model": config.model, **(tags or {})}, manifest={}, datasets=NO_DATASETS
        )
        run.log_summary(_summary(config.epochs, **summary))
    return run.run_id


def _cv(store: Store, experiment_id: str, config: Recipe) -> tuple[str, list[str]]:
    from bitmoji_ml.selection.cv import CrossValidation, FoldResult
    from bitmoji_ml.selection.oof import OutOfFold

    with ParentRun(store, experiment_id=experiment_id, run_name="cv2-hybrid", kind=CV_RUN) as parent:
        parent.log_params({**config.to_params(), "cv_folds": 2, "cv_images": 4})
        parent.log_tags({"model": config.model})
        folds = [
            _training(
                store,
                experiment_id,
                f"fold{k}-cv2-hybrid",  # named as `bitmoji cv` names them
                config,
                parent=parent.run_id,
                tags={RUN_KIND_TAG: CV_FOLD},
                best=None,
                selected=False,
            )
            for k in (1, 2)
        ]
        results = [FoldResult(k, run_id, 2, 2, 0.5 * k, 0.4, 2 - k, 1.0) for k, run_id in enumerate(folds, 1)]
        labels = np.array([0, 1, 0, 1])
        prob_male = np.array([0.1, 0.9, 0.2, 0.4])
        probabilities = np.stack([1 - prob_male, prob_male], axis=1)
        oof = OutOfFold(["a", "b", "c", "d"], labels, probabilities, np.array([1, 1, 2, 2]))
        parent.log_metrics(CrossValidation(results, oof).metrics())
    return parent.run_id, folds


def _tune(store: Store, experiment_id: str, config: Recipe, folder: Path) -> tuple[str, list[str]]:
    import optuna

    from bitmoji_ml.selection.tune import TuneSettings, best_of, log_tune_start

    settings = TuneSettings(
        "study", "sqlite:///unused", "val_acc, val_loss tie-break", {}, list(SEARCH_SPACE), 2, None, 0
    )
    study = optuna.create_study(direction="maximize", study_name="study")
    with ParentRun(store, experiment_id=experiment_id, run_name="tune-study-0", kind=TUNE_RUN) as parent:
        log_tune_start(parent, settings)
        trials = []
        for number, lr in enumerate((0.003, 0.006)):
            trial_config = config.replace(lr=lr)
            tags = {RUN_KIND_TAG: TUNE_TRIAL, "optuna_trial": str(number)}
            run_id = _training(
                store,
                experiment_id,
                f"tune-study-0-trial{number}",
                trial_config,
                parent=parent.run_id,
                tags=tags,
                best=0.9 + number / 100,
            )
            trials.append(run_id)
            study.add_trial(
                optuna.trial.create_trial(
                    params={"lr": lr},
                    distributions={"lr": optuna.distributions.FloatDistribution(5e-4, 1e-2, log=True)},
                    value=0.9 + number / 100,
                    user_attrs={
                        "recipe": trial_config.recipe_values(),
                        "metrics": {"val_acc": 0.9 + number / 100, "val_loss": 0.2, "best_epoch": 5},
                        "run_id": run_id,
                    },
                )
            )
        best_of(study, parent=parent, output=folder / "best_config.toml", settings=settings, trials_run=2)
    return parent.run_id, trials


def build_shapes(folder: Path) -> tuple[Store, Shapes]:
    """The store (set as nothing: pass its uri) and the runs it holds."""
    (folder / "mlruns").mkdir(parents=True, exist_ok=True)
    store = Store.open(f"sqlite:///{folder}/mlruns/mlflow.db")
    experiment_id = store.experiment_id(EXPERIMENT)
    config = Recipe(epochs=20)
    train = _training(store, experiment_id, "hybrid-e20", config, best=0.97)
    with TrainingRun(store, experiment_id=experiment_id, resume_run_id=train) as run:  # --resume --epochs 22
        run.log_start(params={}, tags={}, manifest={}, datasets=NO_DATASETS)
        run.log_resume(changed={"epochs": "22"}, run_name="hybrid-e22")
        run.log_summary(_summary(22, best=0.97))
    other = _training(store, experiment_id, "hybrid-lr0.01", config.replace(lr=0.01), best=0.95)
    refit = _training(
        store,
        experiment_id,
        "hybrid-e20-all",
        config.replace(all_labelled=True),
        best=None,
        selected=False,
        val=False,
    )
    torchrun = _training(store, experiment_id, "hybrid-e20-ddp", config, world="2", best=0.96)
    cv, folds = _cv(store, experiment_id, config)
    tune, trials = _tune(store, experiment_id, config, folder)
    return store, Shapes(train, other, refit, torchrun, cv, folds, tune, trials)
