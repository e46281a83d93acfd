"""Choosing the recipe: `bitmoji cv`, `audit` and `tune`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands import views
from bitmoji_ml.commands.options import Experiment, ListsDir, RunName, friendly, recipe_options
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.recipe import ResolvedRecipe


@friendly
@recipe_options("cv")
def cv(
    recipe: ResolvedRecipe,
    folds: Annotated[int, typer.Option(help="Number of stratified folds")] = 5,
    lists: ListsDir = paths.LISTS_DIR,
    experiment: Experiment = paths.EXPERIMENT,
    run_name: RunName = None,
) -> None:
    """Cross-validate a recipe over every labelled image (k folds, one child run each).

    The images are decoded once; each fold trains on the others as `train` does, and its
    out-of-fold predictions come from its last epoch's weights (no selection on the held-out
    fold). The parent run logs cv_acc, cv_acc_std, cv_loss, oof_acc and oof_predictions.csv."""
    from bitmoji_ml.selection.cv import cv_job
    from bitmoji_ml.tracking.store import Store

    result = cv_job(
        lists_dir=lists,
        experiment=experiment,
        folds=folds,
        recipe=recipe,
        run_name=run_name,
        store=Store.open(),
    )
    views.show_cv(result)


@friendly
def audit(
    run_id: Annotated[
        str | None, typer.Option(help="The `bitmoji cv` run to audit (default: the newest finished one)")
    ] = None,
    top: Annotated[int, typer.Option(help="Issues to print and draw")] = 24,
    output: Annotated[
        Path, typer.Option("--output", help="Folder to write label_issues.csv and label_issues.png in")
    ] = paths.AUDIT_DIR,
    experiment: Experiment = paths.EXPERIMENT,
) -> None:
    """List the labelled images whose labels are likely wrong, from a cv run.

    cleanlab ranks the images by a cv run's out-of-fold predictions; label_issues.csv and
    label_issues.png are written to --output and logged to that run."""
    from bitmoji_ml.selection.audit_job import audit_job
    from bitmoji_ml.tracking.store import Store

    if top < 1:
        raise BitmojiError(f"--top must be at least 1, got {top}")
    result = audit_job(store=Store.open(), experiment=experiment, run_id=run_id, top=top, output=output)
    views.show_audit(result, top=top)


@friendly
@recipe_options("tune")
def tune(
    recipe: ResolvedRecipe,
    trials: Annotated[int, typer.Option(help="New trials to run")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after S seconds")] = None,
    use_cv: Annotated[
        bool, typer.Option("--cv/--no-cv", help="Score each trial by cross-validation (cv_acc)")
    ] = False,
    folds: Annotated[int, typer.Option(help="Folds per trial with --cv")] = 5,
    study: Annotated[
        str | None, typer.Option(help="Optuna study to create or continue (default: <experiment>-tune)")
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", help="TOML file of the best recipe (for train --config)")
    ] = Path("best_config.toml"),
    lists: ListsDir = paths.LISTS_DIR,
    experiment: Experiment = paths.EXPERIMENT,
    run_name: RunName = None,
) -> None:
    """Search the recipe with Optuna; each trial is an MLflow child run.

    TPE sampler, median pruning on val_acc at each tenth of a trial's epochs (per fold with
    --cv). Settings given as flags, by --preset or in --config are fixed; the others of the
    search space are searched. The best trial's recipe is written to --output for `train --config`."""
    from bitmoji_ml.selection.tune import tune_job
    from bitmoji_ml.tracking.store import Store

    result = tune_job(
        lists_dir=lists,
        experiment=experiment,
        trials=trials,
        timeout=timeout,
        use_cv=use_cv,
        folds=folds,
        study_name=study,
        recipe=recipe,
        output=output,
        run_name=run_name,
        store=Store.open(),
    )
    views.show_tune(result)
