"""One Optuna trial of `bitmoji tune` as an MLflow child run: a training on the lists (pruned
on its per-epoch val_acc), or with --cv a cross-validation (pruned on its running fold mean).
Images are decoded once per input size for the whole study."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitmoji_ml.data.lists import read_manifest
from bitmoji_ml.recipe import Recipe, recipe_from_values
from bitmoji_ml.selection.search import objective_value, sample_recipe
from bitmoji_ml.tracking.names import RUN_KIND_TAG, TUNE_TRIAL
from bitmoji_ml.training.settings import preprocess_for, resolve_config

if TYPE_CHECKING:
    import optuna

    from bitmoji_ml.selection.cv import FoldResult
    from bitmoji_ml.selection.folds import LabelledImages
    from bitmoji_ml.tracking.parents import ParentRun
    from bitmoji_ml.tracking.runs import TrainingRun
    from bitmoji_ml.tracking.store import Store
    from bitmoji_ml.training.data import TrainData

logger = logging.getLogger(__name__)
TRIAL_STATE_TAG = "optuna_state"


@dataclasses.dataclass
class TrialEnd:
    """How a trial's run ended: pruned (with the pruner's reason) or complete."""

    pruned: optuna.TrialPruned | None = None

    @contextlib.contextmanager
    def recorded(self, run: TrainingRun | ParentRun) -> Iterator[None]:
        """Around the trial's work inside its run: keep a TrialPruned instead of letting it
        fail the run, and tag the run PRUNED or COMPLETE (other errors pass through untagged)."""
        import optuna

        try:
            yield
        except optuna.TrialPruned as stop:
            self.pruned = stop
        run.log_tags({TRIAL_STATE_TAG: "PRUNED" if self.pruned else "COMPLETE"})

    def raise_if_pruned(self, trial: optuna.Trial) -> None:
        """Once the run is closed, hand a pruning back to Optuna."""
        if self.pruned is not None:
            logger.info("trial %d pruned: %s", trial.number, self.pruned)
            raise self.pruned


PROGRESS_STEPS = 10  # a trial reports val_acc at each tenth of its planned epochs


def progress_step(epoch: int, epochs: int) -> int:
    """Which tenth of its planned `epochs` a trial has completed at `epoch` (1..10). `epochs` is
    itself searched and the LR schedule is planned on it, so epoch k of a 30-epoch run (still at
    a high LR) is no match for epoch k of a 10-epoch run (annealed): trials are compared at the
    same share of their schedule instead."""
    return PROGRESS_STEPS * epoch // epochs


class PruningTracker:
    """The trial's MLflow run as the training loop's tracker, which also reports val_acc to the
    Optuna trial at each tenth of the planned epochs (`progress_step`) and raises
    optuna.TrialPruned when the pruner says stop (so the loop itself knows nothing of Optuna).
    Everything else goes to the run unchanged."""

    def __init__(self, run: TrainingRun, trial: optuna.Trial, *, epochs: int) -> None:
        self._run = run
        self._trial = trial
        self._epochs = epochs
        self._reported = 0  # the last progress step reported

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)

    def log_epoch(
        self, *, epoch: int, metrics: dict[str, float], best_checkpoint: Path | None, model_name: str
    ) -> str:
        import optuna

        location = self._run.log_epoch(
            epoch=epoch, metrics=metrics, best_checkpoint=best_checkpoint, model_name=model_name
        )
        step = progress_step(epoch, self._epochs)
        if step <= self._reported:  # a tenth already reported (runs of more than 10 epochs)
            return location
        self._reported = step
        self._trial.report(metrics["val_acc"], step=step)
        if self._trial.should_prune():
            raise optuna.TrialPruned(
                f"val_acc {metrics['val_acc']:.4f} at epoch {epoch} of {self._epochs} "
                f"({step}/{PROGRESS_STEPS} of the schedule): below the median"
            )
        return location


def report_folds(trial: optuna.Trial):
    """An `on_fold` callback for cross_validate: the running mean fold accuracy as the trial's
    intermediate value (step = folds done), pruned like an epoch."""

    def on_fold(results: list[FoldResult]) -> None:
        import optuna

        running = sum(result.accuracy for result in results) / len(results)
        trial.report(running, step=len(results))
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"mean accuracy {running:.4f} after {len(results)} fold(s): below the median"
            )

    return on_fold


@dataclasses.dataclass
class TrialRunner:
    """The study's objective: `runner(trial)` trains the trial's recipe and returns its score."""

    store: Store
    experiment_id: str
    parent: tuple[str, str]  # the tune run's id and name
    lists_dir: Path
    requested: dict[str, Any]  # the fixed settings (preset, config file, flags)
    searched: list[str]
    folds: int  # 0: train on the lists; else cross-validate with this many folds
    _decoded: dict[Any, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, trial: optuna.Trial) -> float:
        config = resolve_config(recipe_from_values({**self.requested, **sample_recipe(trial, self.searched)}))
        trial.set_user_attr("recipe", config.recipe_values())
        if self.folds:
            metrics, images = self._cv_trial(trial, config)
            accuracy, loss = metrics["cv_acc"], metrics["cv_loss"]
        else:
            metrics, images = self._train_trial(trial, config)
            accuracy, loss = metrics["val_acc"], metrics["val_loss"]
        trial.set_user_attr("metrics", metrics)
        value = objective_value(accuracy=accuracy, loss=loss, images=images)
        logger.info("trial %d: accuracy %.4f, loss %.4f, objective %.6f", trial.number, accuracy, loss, value)
        return value

    def _tags(self, trial: optuna.Trial) -> dict[str, str]:
        return {
            RUN_KIND_TAG: TUNE_TRIAL,
            "optuna_study": trial.study.study_name,
            "optuna_trial": str(trial.number),
        }

    def _name(self, trial: optuna.Trial) -> str:
        return f"{self.parent[1]}-trial{trial.number}"

    def _train_trial(self, trial: optuna.Trial, config: Recipe) -> tuple[dict[str, float], int]:
        """Train on the train list, validate on the val list, prune per epoch."""
        from bitmoji_ml.tracking.runs import TrainingRun
        from bitmoji_ml.training.nested import train_on_data

        data, datasets = self._lists_data(config)
        end = TrialEnd()
        with TrainingRun(
            self.store,
            experiment_id=self.experiment_id,
            run_name=self._name(trial),
            parent_run_id=self.parent[0],
        ) as run:
            trial.set_user_attr("run_id", run.run_id)
            with end.recorded(run):
                trained = train_on_data(
                    run=run,
                    config=config,
                    data=data,
                    datasets=datasets,
                    params={"trial": trial.number},
                    tags=self._tags(trial),
                    tracker=PruningTracker(run, trial, epochs=config.epochs),
                )
        end.raise_if_pruned(trial)
        best = trained.result.best
        metrics = {"val_acc": best["val_acc"], "val_loss": best["val_loss"], "best_epoch": int(best["epoch"])}
        return metrics, len(data.val_labels)

    def _cv_trial(self, trial: optuna.Trial, config: Recipe) -> tuple[dict[str, float], int]:
        """Cross-validate the recipe, its folds nested under the trial's run; prune per fold."""
        from bitmoji_ml.selection.cv import check_cv_recipe, cross_validate, log_cv_results, log_cv_start
        from bitmoji_ml.selection.folds import stratified_folds
        from bitmoji_ml.tracking.parents import ParentRun

        check_cv_recipe(config)
        labelled = self._labelled(config)
        assignment = stratified_folds(labelled.labels, folds=self.folds, seed=config.seed)
        end = TrialEnd()
        with ParentRun(
            self.store,
            experiment_id=self.experiment_id,
            run_name=self._name(trial),
            kind=TUNE_TRIAL,
            parent_run_id=self.parent[0],
        ) as run:
            trial.set_user_attr("run_id", run.run_id)
            log_cv_start(run, config=config, labelled=labelled, folds=self.folds)
            run.log_params({"trial": trial.number})
            run.log_tags(self._tags(trial))
            with end.recorded(run):
                outcome = cross_validate(
                    store=self.store,
                    experiment_id=self.experiment_id,
                    config=config,
                    labelled=labelled,
                    assignment=assignment,
                    parent=(run.run_id, self._name(trial)),
                    on_fold=report_folds(trial),
                )
                log_cv_results(run, outcome=outcome, seconds={})
        end.raise_if_pruned(trial)
        metrics = outcome.metrics()
        keys = ("cv_acc", "cv_acc_std", "cv_loss", "oof_acc")
        return {key: metrics[key] for key in keys}, len(labelled.labels)

    def _lists_data(self, config: Recipe) -> tuple[TrainData, Any]:
        """The train and val lists decoded at the config's input size (once per size)."""
        from bitmoji_ml.tracking.datasets import lists_datasets
        from bitmoji_ml.training.data import load_data

        key = ("lists", preprocess_for(config), config.disk_cache)
        if key not in self._decoded:
            manifest = read_manifest(self.lists_dir)
            data = load_data(self.lists_dir, manifest, preprocess_for(config), config.disk_cache)
            self._decoded[key] = (data, lists_datasets(lists_dir=self.lists_dir, manifest=manifest))
        return self._decoded[key]

    def _labelled(self, config: Recipe) -> LabelledImages:
        """Every labelled image decoded at the config's input size (once per size)."""
        from bitmoji_ml.selection.folds import decode_labelled

        key = ("labelled", preprocess_for(config), config.disk_cache)
        if key not in self._decoded:
            self._decoded[key] = decode_labelled(lists_dir=self.lists_dir, config=config)
        return self._decoded[key]
