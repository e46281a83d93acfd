"""The view layer: how each job's result reads in a terminal. Commands call a job, then one
`show_*` here; jobs return dataclasses and never print tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from bitmoji_ml.report import format_table

if TYPE_CHECKING:
    from bitmoji_ml.data.classes import Classes
    from bitmoji_ml.data.dataset import Exclusion
    from bitmoji_ml.evaluation import EvaluationResult
    from bitmoji_ml.export.ensemble import EnsembleExportResult
    from bitmoji_ml.export.job import ExportResult
    from bitmoji_ml.selection.audit_job import AuditResult
    from bitmoji_ml.selection.cv import CVResult
    from bitmoji_ml.selection.seeds import SeedsResult
    from bitmoji_ml.selection.tune import TuneResult
    from bitmoji_ml.serving.predict_job import PredictResult
    from bitmoji_ml.training.job import TrainJobResult


def classes_line(classes: Classes) -> str | None:
    """What a model of other classes than Bitmoji's tells apart (Bitmoji's output is unchanged)."""
    return None if classes.kaggle else f"{len(classes)} classes: {', '.join(classes.names)}"


def show_training(result: TrainJobResult) -> None:
    """`bitmoji train`: the run, its best (or last) epoch and where its checkpoint is."""
    if line := classes_line(result.classes):
        typer.echo(line)
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
    if line := classes_line(result.oof.classes):
        typer.echo(line)
    typer.echo(
        f"cv accuracy {metrics['cv_acc']:.2%} ± {metrics['cv_acc_std']:.2%} (mean ± std of {len(result.folds)} "
        f"folds); out-of-fold {metrics['oof_acc']:.2%} ({int(metrics['oof_errors'])} of {len(result.oof.images)} "
        f"wrong); cv loss {metrics['cv_loss']:.4f}"
    )
    typer.echo(
        f"wall time {result.wall_seconds:.1f}s (decoding {result.decode_seconds:.1f}s); run {result.run_id} "
        f"({result.run_name}): next, bitmoji audit --run-id {result.run_id}"
    )


def show_cv_seeds(result: SeedsResult) -> None:
    """`bitmoji cv --seeds`: a row per seed (its cv run), then mean ± std over the seeds."""
    rows = [
        [
            seed,
            int(run.metrics["oof_errors"]),
            f"{run.metrics['oof_acc']:.2%}",
            f"{run.metrics['cv_loss']:.4f}",
            f"{run.metrics['cv_acc']:.2%}",
            run.run_id[:8],
            run.run_name,
        ]
        for seed, run in zip(result.seeds, result.runs, strict=True)
    ]
    headers = ["seed", "OOF errors", "OOF accuracy", "cv loss", "cv accuracy", "run", "run name"]
    typer.echo(format_table(headers, rows))
    spread, images = result.summary, len(result.runs[0].oof.images)
    typer.echo(
        f"over {len(result.seeds)} seeds (mean ± std): OOF errors {spread['oof_errors'].mean:.1f} ± "
        f"{spread['oof_errors'].std:.1f} of {images}; OOF accuracy {spread['oof_acc'].mean:.2%} ± "
        f"{spread['oof_acc'].std:.2%}; cv loss {spread['cv_loss'].mean:.4f} ± {spread['cv_loss'].std:.4f}"
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
    """`bitmoji predict`: images predicted, the share of each class (Bitmoji: the male share),
    files skipped, speed, where it went."""
    rate = result.predicted / result.seconds if result.seconds else 0.0
    where = f"{result.output} (Parquet)" if result.kind == "parquet" else result.output
    if result.classes.kaggle:
        shares = f"{result.share('male'):.1%} male"
    else:  # the classes predicted, most often first, at most ten; the others summed up
        predicted = [name for name in result.classes.names if result.counts.get(name, 0)]
        shown = sorted(predicted, key=lambda name: -result.counts[name])[:10]
        shares = ", ".join(f"{result.share(name):.1%} {name}" for name in shown)
        others = [name for name in result.classes.names if name not in shown]
        if others:
            rest = sum(result.share(name) for name in others)
            shares += f" ({rest:.1%} in the {len(others)} other classes)"
    typer.echo(
        f"{result.predicted} images, {shares}, {len(result.skipped)} skipped, "
        f"{result.seconds:.2f}s, {rate:,.0f} images/s -> {where}"
    )


def show_prepare(
    manifest: dict,
    *,
    root: object,
    lists: object,
    split: str,
    seed: int,
    val_fraction: float,
    excluded: Exclusion | None,
) -> None:
    """`bitmoji prepare`: images per class and split, what was left out and what was written."""
    balance = manifest["class_balance"]
    names = manifest.get("classes", {}).get("names") or list(balance["train"]["counts"])
    counts = {name: [balance[part]["counts"][name] for part in ("train", "val")] for name in names}
    labelled = balance["train"]["images"] + balance["val"]["images"]
    rows = [
        [name, train, val, train + val, f"{(train + val) / labelled:.1%}"]
        for name, (train, val) in counts.items()
    ]
    rows.append(["all", balance["train"]["images"], balance["val"]["images"], labelled, "100.0%"])
    layout = manifest.get("layout", "kaggle")
    typer.echo(
        f"dataset {root} ({layout} layout, {len(names)} classes; {split} split, seed {seed}, "
        f"val fraction {val_fraction})"
    )
    typer.echo(format_table(["class", "train", "val", "all", "share"], rows))
    totals = [train + val for train, val in counts.values()]
    if max(totals) >= 3 * min(totals):
        typer.echo(
            f"imbalanced: the largest class has {max(totals) / min(totals):.1f}x the images of the smallest; "
            "the split keeps each class's share, training does not reweight: read the per-class recall"
        )
    test = manifest["counts"]["test"]
    typer.echo(
        f"test (unlabelled): {test} images"
        if "test.txt" in manifest["files"]
        else "test: no unlabelled folder"
    )
    if excluded is not None:
        typer.echo(
            f"left out {len(excluded.image_ids)} image(s) listed in {excluded.source} (sha256 {excluded.sha256[:12]})"
        )
    written = [name for name in ("train.txt", "val.txt", "test.txt") if name in manifest["files"]]
    typer.echo(f"wrote {lists}/{', '.join(written)}, manifest.json (digest {manifest['digest'][:12]})")


def show_audit(result: AuditResult, *, top: int) -> None:
    """`bitmoji audit`: the least trusted labels, then where the files are and what to do next.
    Bitmoji shows P(male); other classes the suggested label (label quality is P(given label))."""
    names, kaggle = result.classes.names, result.classes.kaggle
    rows = [
        [
            i.rank,
            i.image_id,
            names[i.label],
            f"{i.probabilities[1]:.4f}" if kaggle else names[i.suggested],
            f"{i.label_quality:.4f}",
            i.fold,
            "yes" if i.flagged else "-",
        ]
        for i in result.ranked[:top]
    ]
    headers = ["rank", "image_id", "given label", "P(male)" if kaggle else "suggested", "label quality"]
    headers += ["fold", "issue"]
    typer.echo(format_table(headers, rows))
    typer.echo(
        f"{len(result.issues)} label issue(s) flagged by cleanlab among {result.images} images (run "
        f"{result.run_id}), then the least trusted other labels. Look at {result.faces_png}; list the "
        f"ones you judge wrong in a CSV with an image_id column ({result.issues_csv} holds the flagged "
        "ones), then `bitmoji prepare --exclude FILE`"
    )


def show_export(result: ExportResult) -> None:
    """`bitmoji export-onnx`: the parity report, the int8 comparison and the registry's decision."""
    from bitmoji_ml.export.int8 import accuracy_table, int8_table
    from bitmoji_ml.export.parity import parity_table
    from bitmoji_ml.export.register import registration_lines

    typer.echo(parity_table(result.report))
    if result.int8 is not None:
        typer.echo(int8_table(result.int8.report))
        typer.echo(accuracy_table(result.int8, result.output))
        typer.echo(
            f"champion: {'int8' if result.int8.decision.int8 else 'fp32'} ({result.int8.decision.reason})"
        )
    for line in registration_lines(result.registration) if result.registration is not None else []:
        typer.echo(line)


def show_ensemble_export(result: EnsembleExportResult) -> None:
    """`bitmoji export-onnx --cv-run`: the export as any other, its members, and its cost
    beside one member's."""
    typer.echo(
        f"ensemble of {len(result.members)} fold models of cv run {result.cv_run_id}: "
        f"{', '.join(member[:8] for member in result.members)}"
    )
    show_export(result.export)
    cost = result.cost
    rows = [
        ["ensemble", f"{cost.ensemble_bytes / 1024:.0f}", f"{cost.ensemble_ms:.3f}"],
        ["one member", f"{cost.member_bytes / 1024:.0f}", f"{cost.member_ms:.3f}"],
    ]
    typer.echo(format_table(["model", "KiB", "ms/image"], rows))
    typer.echo(f"(onnxruntime on {cost.images} images, one timing on a shared machine: indicative only)")
    for line in result.decision:  # the champion policy: the protocol's verdict and cost
        typer.echo(line)


def show_evaluation(result: EvaluationResult) -> None:
    """`bitmoji evaluate`: the metrics and the confusion matrix."""
    from bitmoji_ml.metrics import metrics_table

    typer.echo(metrics_table(result.metrics, result.confusion_matrix, result.classes))
