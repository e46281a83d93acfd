"""Choosing the recipe: `bitmoji cv`, `audit` and `tune`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands.options import (
    BatchSize,
    ConfigFile,
    Device,
    DiskCache,
    Epochs,
    Experiment,
    Flip,
    ImageSize,
    Jitter,
    LabelSmoothing,
    ListsDir,
    Lr,
    Model,
    Optimizer,
    Patience,
    Preset,
    RunName,
    Scale,
    Schedule,
    Seed,
    Shift,
    Threads,
    WeightDecay,
    Width,
    friendly,
    recipe_overrides,
    setting,
)
from bitmoji_ml.errors import BitmojiError


@friendly
def cv(
    folds: Annotated[int, typer.Option(help="Number of stratified folds")] = 5,
    preset: Preset = "default",
    config: ConfigFile = None,
    model: Model = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    optimizer: Optimizer = None,
    schedule: Schedule = None,
    weight_decay: WeightDecay = None,
    label_smoothing: LabelSmoothing = None,
    image_size: ImageSize = None,
    width: Width = None,
    seed: Annotated[int | None, setting("seed", "Random seed of the folds and of training")] = None,
    device: Device = None,
    threads: Threads = None,
    flip: Flip = None,
    shift: Shift = None,
    scale: Scale = None,
    jitter: Jitter = None,
    disk_cache: DiskCache = None,
    lists: ListsDir = paths.LISTS_DIR,
    experiment: Experiment = paths.EXPERIMENT,
    run_name: RunName = None,
) -> None:
    """Cross-validate a recipe over every labelled image (k folds, one child run each).

    The images are decoded once; each fold trains on the others as `train` does, and its
    out-of-fold predictions come from its last epoch's weights (no selection on the held-out
    fold). The parent run logs cv_acc, cv_acc_std, cv_loss, oof_acc and oof_predictions.csv."""
    overrides = recipe_overrides(locals())
    from bitmoji_ml.report import format_table
    from bitmoji_ml.selection.cv import cv_job
    from bitmoji_ml.tracking.store import Store

    result = cv_job(
        lists_dir=lists,
        experiment=experiment,
        folds=folds,
        preset=preset,
        config_file=config,
        overrides=overrides,
        run_name=run_name,
        store=Store.open(),
    )
    rows = [
        [
            f.fold,
            f.train_images,
            f.heldout_images,
            f"{f.accuracy:.2%}",
            f.errors,
            f.loss,
            int(f.seconds),
            f.run_id[:8],
        ]
        for f in result.folds
    ]
    headers = ["fold", "train", "held out", "accuracy", "errors", "loss", "train s", "run"]
    typer.echo(format_table(headers, rows))
    metrics = result.metrics
    typer.echo(
        f"cv accuracy {metrics['cv_acc']:.2%} ± {metrics['cv_acc_std']:.2%} (mean ± std of {len(result.folds)} "
        f"folds); out-of-fold {metrics['oof_acc']:.2%} ({int(metrics['oof_errors'])} of {len(result.oof.images)} "
        f"wrong); cv loss {metrics['cv_loss']:.4f}"
    )
    typer.echo(
        f"wall time {result.wall_seconds:.1f}s (decoding {result.decode_seconds:.1f}s); run {result.run_id} "
        f"({result.run_name}): next, bitmoji audit --run-id {result.run_id}"
    )


@friendly
def audit(
    run_id: Annotated[
        str | None, typer.Option(help="The `bitmoji cv` run to audit (default: the newest finished one)")
    ] = None,
    top: Annotated[int, typer.Option(help="Issues to print and draw")] = 24,
    output: Annotated[
        Path | None, typer.Option("--output", help="Folder to also keep label_issues.csv and .png in")
    ] = None,
    experiment: Experiment = paths.EXPERIMENT,
) -> None:
    """List the labelled images whose labels are likely wrong, from a cv run.

    cleanlab ranks the images by a cv run's out-of-fold predictions; label_issues.csv and
    label_issues.png are logged to that run."""
    from bitmoji_ml.data.labels import CLASS_NAMES
    from bitmoji_ml.report import format_table
    from bitmoji_ml.selection.audit_job import audit_job
    from bitmoji_ml.tracking.store import Store

    if top < 1:
        raise BitmojiError(f"--top must be at least 1, got {top}")
    result = audit_job(store=Store.open(), experiment=experiment, run_id=run_id, top=top, output=output)
    rows = [
        [
            i.rank,
            i.image_id,
            CLASS_NAMES[i.label],
            f"{i.prob_male:.4f}",
            f"{i.label_quality:.4f}",
            i.fold,
            "yes" if i.flagged else "-",
        ]
        for i in result.ranked[:top]
    ]
    headers = ["rank", "image_id", "given label", "P(male)", "label quality", "fold", "issue"]
    typer.echo(format_table(headers, rows))
    typer.echo(
        f"{len(result.issues)} label issue(s) flagged by cleanlab among {result.images} images (run "
        f"{result.run_id}), then the least trusted other labels. Look at label_issues.png; list the "
        "ones you judge wrong in a CSV with an image_id column (label_issues.csv holds the flagged "
        "ones), then `bitmoji prepare --exclude FILE`"
    )
    for path in result.written:
        typer.echo(f"wrote {path}")


@friendly
def tune(
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
    preset: Preset = "default",
    config: ConfigFile = None,
    model: Model = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    optimizer: Optimizer = None,
    schedule: Schedule = None,
    weight_decay: WeightDecay = None,
    label_smoothing: LabelSmoothing = None,
    image_size: ImageSize = None,
    width: Width = None,
    patience: Patience = None,
    seed: Seed = None,
    device: Device = None,
    threads: Threads = None,
    flip: Flip = None,
    shift: Shift = None,
    scale: Scale = None,
    jitter: Jitter = None,
    disk_cache: DiskCache = None,
    lists: ListsDir = paths.LISTS_DIR,
    experiment: Experiment = paths.EXPERIMENT,
    run_name: RunName = None,
) -> None:
    """Search the recipe with Optuna; each trial is an MLflow child run.

    TPE sampler, median pruning on per-epoch val_acc (per fold with --cv). Settings given as
    flags, by --preset or in --config are fixed; the others of the search space are searched.
    The best trial's recipe is written to --output for `train --config`."""
    overrides = recipe_overrides(locals())
    from bitmoji_ml.report import format_table
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
        preset=preset,
        config_file=config,
        overrides=overrides,
        output=output,
        run_name=run_name,
        store=Store.open(),
    )
    typer.echo(
        f"study {result.study!r}: {result.trials_run} new trial(s), {result.trials_total} in all "
        f"({result.storage}); objective {result.objective}"
    )
    rows = [[key, f"{value:.6g}"] for key, value in result.best_metrics.items()]
    rows += [[key, f"{result.best_recipe[key]:g}  (searched)"] for key in result.searched]
    typer.echo(f"best trial {result.best_trial} (objective {result.best_value:.6f}):")
    typer.echo(format_table(["", "value"], rows))
    typer.echo(
        f"wrote {result.config_path}; run {result.run_id}. Refit: bitmoji train --all-labelled --config {result.config_path}"
    )
