"""The view layer: how each job's result reads in a terminal. Commands call a job, then one
`show_*` here; jobs return dataclasses and never print tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from bitmoji_ml.report import format_table

if TYPE_CHECKING:
    from bitmoji_ml.selection.cv import CVResult
    from bitmoji_ml.selection.tune import TuneResult
    from bitmoji_ml.serving.predict_job import PredictResult
    from bitmoji_ml.training.job import TrainJobResult


def show_training(result: TrainJobResult) -> None:
    """`bitmoji train`: the run, its best (or last) epoch and where its checkpoint is."""
    if result.best_val_acc is None:
        typer.echo(
            f"run {result.run_id}  trained on all {result.train_images} labelled images, no validation; "
            f"the model is epoch {result.best_epoch} (export it: bitmoji export-onnx --run-id {result.run_id})"
        )
    else:
        typer.echo(f"run {result.run_id}  best val acc {result.best_val_acc:.2%} (epoch {result.best_epoch})")
    typer.echo(f"best checkpoint: {result.best_checkpoint}")


def show_cv(result: CVResult) -> None:
    """`bitmoji cv`: a row per fold, then the summary over folds and what to do next."""
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
    typer.echo(
        format_table(["fold", "train", "held out", "accuracy", "errors", "loss", "train s", "run"], rows)
    )
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


def show_tune(result: TuneResult) -> None:
    """`bitmoji tune`: the study, its best trial and the recipe file written."""
    typer.echo(
        f"study {result.study!r}: {result.trials_run} new trial(s), {result.trials_total} in all "
        f"({result.storage}); objective {result.objective}"
    )
    rows = [[key, f"{value:.6g}"] for key, value in result.best_metrics.items()]
    rows += [[key, f"{result.best_recipe[key]:g}  (searched)"] for key in result.searched]
    typer.echo(f"best trial {result.best_trial} (objective {result.best_value:.6f}):")
    typer.echo(format_table(["", "value"], rows))
    typer.echo(
        f"wrote {result.config_path}; run {result.run_id}. "
        f"Refit: bitmoji train --all-labelled --config {result.config_path}"
    )


def show_prediction(result: PredictResult) -> None:
    """`bitmoji predict`: images predicted, the male share, files skipped, speed, where it went."""
    rate = result.predicted / result.seconds if result.seconds else 0.0
    where = f"{result.output} (Parquet)" if result.kind == "parquet" else result.output
    typer.echo(
        f"{result.predicted} images, {result.male_share:.1%} male, {len(result.skipped)} skipped, "
        f"{result.seconds:.2f}s, {rate:,.0f} images/s -> {where}"
    )
