"""`bitmoji cv`: stratified k-fold cross-validation of one recipe over every labelled image
(the train and val lists together), as one MLflow parent run with a child run per fold.

The images are decoded once; each fold trains on the other folds exactly as `train` trains
(same loop, same logging) and its out-of-fold (OOF) predictions come from the last epoch's
weights (the EMA average when EMA is on). Nothing is selected on the held-out fold, neither an
epoch nor an early stop, so the OOF accuracy is an honest estimate of the recipe.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bitmoji_ml.data.classes import predicted_indices
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.recipe import Recipe, ResolvedRecipe
from bitmoji_ml.selection.folds import (
    LabelledImages,
    decode_labelled,
    fold_data,
    fold_datasets,
    stratified_folds,
)
from bitmoji_ml.selection.oof import OutOfFold, image_folder
from bitmoji_ml.tracking.names import (
    CV_FOLD,
    CV_RUN,
    IMAGE_FOLDER_TAG,
    LAST_EPOCH,
    OOF_PREDICTIONS,
    PLOTS_DIR,
    RUN_KIND_TAG,
    classes_param,
)
from bitmoji_ml.training.settings import default_run_name, resolve_config, use_cpu

if TYPE_CHECKING:
    from bitmoji_ml.tracking.parents import ParentRun
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)
OOF_WEIGHTS = "last epoch, EMA weights (no selection on the held-out fold)"


@dataclasses.dataclass(frozen=True)
class FoldResult:
    """One fold: trained on the others, scored on itself with its last epoch's weights."""

    fold: int  # 1..k
    run_id: str
    train_images: int
    heldout_images: int
    accuracy: float
    loss: float
    errors: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class CrossValidation:
    """The folds and the out-of-fold predictions they made."""

    folds: list[FoldResult]
    oof: OutOfFold

    def metrics(self) -> dict[str, float]:
        """cv_acc (mean of the folds), cv_acc_std (sample std), cv_loss, oof_acc, fold_<k>_acc;
        for classes other than Bitmoji's, each class's out-of-fold recall (oof_recall_<name>)."""
        accuracies = np.array([fold.accuracy for fold in self.folds])
        predicted = predicted_indices(self.oof.probabilities)
        return {
            "cv_acc": float(accuracies.mean()),
            "cv_acc_std": float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0,
            "cv_loss": float(np.mean([fold.loss for fold in self.folds])),
            "oof_acc": float((predicted == self.oof.labels).mean()),
            "oof_errors": int((predicted != self.oof.labels).sum()),
            **{f"fold_{fold.fold}_acc": fold.accuracy for fold in self.folds},
            **self.recall_per_class(),
        }

    def recall_per_class(self) -> dict[str, float]:
        """oof_recall_<name> per class (none for Bitmoji, whose cv runs log what they always did)."""
        classes = self.oof.classes
        if classes.kaggle:
            return {}
        from bitmoji_ml.metrics import classification_metrics

        scores = classification_metrics(self.oof.labels, self.oof.probabilities, classes)
        return {f"oof_recall_{name}": scores[f"recall_{name}"] for name in classes.names}


@dataclasses.dataclass(frozen=True)
class CVResult:
    """What `bitmoji cv` reports."""

    run_id: str
    run_name: str
    folds: list[FoldResult]
    metrics: dict[str, float]
    oof: OutOfFold
    decode_seconds: float
    wall_seconds: float
    config: Recipe


def cv_config(recipe: ResolvedRecipe) -> Recipe:
    """The recipe as `train` resolves it, checked by `check_cv_recipe`."""
    config = resolve_config(recipe.recipe)
    check_cv_recipe(config)
    return config


def check_cv_recipe(config: Recipe) -> None:
    """Refuse what needs a validation list to select on, or leaves no fold to hold out."""
    if config.patience:
        raise BitmojiError(
            "cv trains every fold for the fixed number of epochs and scores its last epoch (no "
            "selection on the held-out fold), so patience must be 0"
        )
    if config.all_labelled:
        raise BitmojiError("cv holds out each fold in turn: all_labelled does not apply")


def run_fold(
    *,
    store: Store,
    experiment_id: str,
    config: Recipe,
    labelled: LabelledImages,
    assignment: np.ndarray,
    fold: int,
    parent: tuple[str, str],
) -> tuple[FoldResult, np.ndarray]:
    """Train fold `fold` (0-based) as a child of `parent` (run id, run name); returns its result
    and the held-out images' class probabilities (images, classes) from the last epoch's weights."""
    from bitmoji_ml.tracking.runs import TrainingRun
    from bitmoji_ml.training.evaluate import evaluate
    from bitmoji_ml.training.nested import train_on_data

    folds = int(assignment.max()) + 1
    datasets = fold_datasets(labelled, assignment, fold, folds)
    data = fold_data(labelled, assignment, fold, datasets.training[0].digest)
    name = f"fold{fold + 1}-{parent[1]}"  # the fold first: the UI cuts long names at the end
    with TrainingRun(
        store, experiment_id=experiment_id, run_name=name, parent_run_id=parent[0], selection=LAST_EPOCH
    ) as run:
        logger.info(
            "fold %d/%d: run %s, %d training images", fold + 1, folds, run.run_id, len(data.train_labels)
        )
        trained = train_on_data(
            run=run,
            config=config,
            data=data,
            datasets=datasets,
            params={"cv_fold": fold + 1, "cv_folds": folds},
            tags={RUN_KIND_TAG: CV_FOLD},
            select_best=False,
        )
    scored = evaluate(trained.state.evaluated, data.val_images, data.val_labels, trained.state.device)
    result = FoldResult(
        fold=fold + 1,
        run_id=run.run_id,
        train_images=len(data.train_labels),
        heldout_images=len(data.val_labels),
        accuracy=scored.accuracy,
        loss=scored.loss,
        errors=int(scored.confusion.sum() - np.trace(scored.confusion)),
        seconds=trained.result.train_seconds,
    )
    return result, scored.probabilities


def cross_validate(
    *,
    store: Store,
    experiment_id: str,
    config: Recipe,
    labelled: LabelledImages,
    assignment: np.ndarray,
    parent: tuple[str, str],
    on_fold: Callable[[list[FoldResult]], None] | None = None,
) -> CrossValidation:
    """Every fold in turn as a child run of `parent` (run id, run name); `on_fold` sees the
    results so far after each fold (tuning prunes there)."""
    probabilities = np.full((len(labelled.labels), len(labelled.classes)), np.nan)
    results: list[FoldResult] = []
    for fold in range(int(assignment.max()) + 1):
        result, held_out = run_fold(
            store=store,
            experiment_id=experiment_id,
            config=config,
            labelled=labelled,
            assignment=assignment,
            fold=fold,
            parent=parent,
        )
        probabilities[assignment == fold] = held_out
        results.append(result)
        if on_fold is not None:
            on_fold(results)
    images = [str(path) for path in labelled.paths]
    oof = OutOfFold(images, labelled.labels, probabilities, assignment + 1, labelled.classes)
    return CrossValidation(results, oof)


def log_cv_start(parent: ParentRun, *, config: Recipe, labelled: LabelledImages, folds: int) -> None:
    """The recipe, the folds and how OOF predictions are made as params; both lists as inputs."""
    from bitmoji_ml.tracking.datasets import lists_datasets

    parent.log_params(
        {
            **config.to_params(),
            "cv_folds": folds,
            "cv_images": len(labelled.labels),
            "oof_weights": OOF_WEIGHTS,
            **classes_param(labelled.classes.names),
        }
    )
    parent.log_tags(
        {
            "model": config.model,
            "data_digest": labelled.manifest.get("digest", ""),
            IMAGE_FOLDER_TAG: str(image_folder([str(path) for path in labelled.paths])),
        }
    )
    lists = lists_datasets(lists_dir=labelled.lists_dir, manifest=labelled.manifest, all_labelled=True)
    parent.log_inputs([dataset.as_input("cross-validation") for dataset in lists.training])


def log_cv_results(parent: ParentRun, *, outcome: CrossValidation, seconds: dict[str, float]) -> None:
    """The summary metrics, `fold_acc` per fold (step = fold), oof_predictions.csv and the OOF
    confusion matrix."""
    from sklearn.metrics import confusion_matrix

    from bitmoji_ml import plots
    from bitmoji_ml.selection.oof import write_oof_csv

    parent.log_metrics({**outcome.metrics(), **seconds})
    for fold in outcome.folds:
        parent.log_metrics({"fold_acc": fold.accuracy}, step=fold.fold)
    oof = outcome.oof
    predicted = predicted_indices(oof.probabilities)
    matrix = confusion_matrix(oof.labels, predicted, labels=list(range(len(oof.classes))))
    with tempfile.TemporaryDirectory(prefix="bitmoji-cv-") as folder:
        write_oof_csv(oof, Path(folder) / OOF_PREDICTIONS, folder=image_folder(oof.images))
        parent.log_artifact(Path(folder) / OOF_PREDICTIONS)
        title = f"out-of-fold, {len(outcome.folds)} folds"
        plots.confusion_matrix_plot(
            matrix, Path(folder) / "oof_confusion_matrix.png", title=title, class_names=oof.classes.names
        )
        parent.log_artifact(Path(folder) / "oof_confusion_matrix.png", PLOTS_DIR)


def cv_job(
    *,
    lists_dir: Path,
    experiment: str,
    recipe: ResolvedRecipe,
    folds: int = 5,
    run_name: str | None = None,
    store: Store | None = None,
    tags: dict[str, str] | None = None,
    labelled: LabelledImages | None = None,
) -> CVResult:
    """`bitmoji cv`: decode once (unless the caller passes the `labelled` images, decoded at the
    recipe's input size), split into `folds` stratified folds (seeded by the recipe's seed),
    train each as a child run, log the summary and the OOF predictions to the parent (with
    `tags`: `cv --seeds` links its runs by them)."""

    from bitmoji_ml.tracking.parents import ParentRun
    from bitmoji_ml.tracking.store import Store
    from bitmoji_ml.training.termination import sigterm_ends_run

    started = time.perf_counter()
    store = store or Store.open()
    experiment_id = store.experiment_id(experiment)
    config = cv_config(recipe)
    use_cpu(config.threads)
    labelled = labelled or decode_labelled(lists_dir=lists_dir, config=config)
    decode_seconds = time.perf_counter() - started
    assignment = stratified_folds(labelled.labels, folds=folds, seed=config.seed)
    logger.info("decoded %d labelled images once in %.1fs", len(labelled.labels), decode_seconds)
    name = run_name or f"cv{folds}-{default_run_name(config)}"
    # SIGTERM ends the parent and the running child as KILLED, as Ctrl-C does.
    with (
        sigterm_ends_run(),
        ParentRun(store, experiment_id=experiment_id, run_name=name, kind=CV_RUN) as parent,
    ):
        logger.info("MLflow run %s (%s, experiment %s)", parent.run_id, store.uri, experiment)
        log_cv_start(parent, config=config, labelled=labelled, folds=folds)
        if tags:
            parent.log_tags(tags)
        outcome = cross_validate(
            store=store,
            experiment_id=experiment_id,
            config=config,
            labelled=labelled,
            assignment=assignment,
            parent=(parent.run_id, name),
        )
        wall = time.perf_counter() - started
        log_cv_results(
            parent, outcome=outcome, seconds={"cv_seconds": wall, "decode_seconds": decode_seconds}
        )
    return CVResult(
        parent.run_id, name, outcome.folds, outcome.metrics(), outcome.oof, decode_seconds, wall, config
    )
