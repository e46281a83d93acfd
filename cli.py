"""The `bitmoji` command line: one small function per stage. Parse, call the library, print.

Heavy libraries (torch, mlflow, onnxruntime) are imported inside the commands that need them,
so `bitmoji --help`, `prepare` and `predict` start fast.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.config import TrainConfig
from bitmoji_ml.errors import BitmojiError, ReportedElsewhere

app = typer.Typer(
    help="Train, track, export and serve a gender classifier for Bitmoji faces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDir = Annotated[
    Path | None,
    typer.Option(help="Kaggle dataset folder (default: $BITMOJI_DATA, ../shared/bitmoji, data/bitmoji)"),
]
ListsDir = Annotated[Path, typer.Option("--lists", help="Folder with the lists from `prepare`")]
Experiment = Annotated[str, typer.Option(help="MLflow experiment name")]


def print_version(value: bool) -> None:
    """Eager --version: print and exit before any command runs."""
    if value:
        from bitmoji_ml import __version__

        typer.echo(f"bitmoji-ml {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit", callback=print_version, is_eager=True),
    ] = False,
) -> None:
    """Train, track, export and serve a gender classifier for Bitmoji faces."""
    from bitmoji_ml.console import configure_logging

    configure_logging()


def friendly(command: Callable) -> Callable:
    """Turn a BitmojiError into a one-line message on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BitmojiError as error:
            if not isinstance(error, ReportedElsewhere):
                typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@friendly
def prepare(
    data_dir: DataDir = None,
    lists: Annotated[
        Path,
        typer.Option(
            "--lists", help="Folder to write the lists to (train, export-onnx and evaluate read it)"
        ),
    ] = paths.LISTS_DIR,
    val_fraction: Annotated[float, typer.Option(help="Share of labelled images for validation")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the stratified split")] = 0,
    split: Annotated[
        str, typer.Option(help="stratified, or head (the seed's first-80 % split)")
    ] = "stratified",
    exclude: Annotated[
        Path | None,
        typer.Option(
            help="CSV with an image_id column (e.g. the audit's label_issues.csv, after looking at the "
            "faces): leave those images out of the lists; recorded in manifest.json"
        ),
    ] = None,
) -> None:
    """Check the dataset and write train/val/test lists plus manifest.json."""
    from bitmoji_ml.data.dataset import load_dataset, read_exclusions
    from bitmoji_ml.data.lists import write_lists
    from bitmoji_ml.report import format_table

    root = paths.resolve_data_dir(data_dir)
    excluded = read_exclusions(exclude) if exclude is not None else None
    dataset = load_dataset(root)
    manifest = write_lists(
        dataset, lists, val_fraction=val_fraction, seed=seed, split=split, excluded=excluded
    )
    balance = manifest["class_balance"]
    rows = [
        [
            name,
            balance[name]["images"],
            balance[name]["male"],
            balance[name]["female"],
            f"{balance[name]['male_share']:.1%}",
        ]
        for name in ("train", "val")
    ] + [["test", manifest["counts"]["test"], "-", "-", "-"]]
    typer.echo(f"dataset {root} ({split} split, seed {seed}, val fraction {val_fraction})")
    typer.echo(format_table(["split", "images", "male", "female", "male share"], rows))
    if excluded is not None:
        typer.echo(
            f"left out {len(excluded.image_ids)} image(s) listed in {exclude} (sha256 {excluded.sha256[:12]})"
        )
    typer.echo(
        f"wrote {lists}/train.txt, val.txt, test.txt, manifest.json (digest {manifest['digest'][:12]})"
    )


def setting(field: str, text: str, *names: str):
    """A recipe flag whose help shows the default from TrainConfig (presets may change it)."""
    return typer.Option(*names, help=f"{text} (default: {getattr(TrainConfig, field)})", show_default=False)


# The recipe flags, shared by train, cv and tune (each maps to the TrainConfig field of its name).
Preset = Annotated[str, typer.Option(help="default, seed-cnn (the baseline) or resnet18")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML file of TrainConfig values")]
Model = Annotated[str | None, setting("model", "hybrid, separable, compact, seed-cnn or resnet18")]
Epochs = Annotated[int | None, setting("epochs", "Training epochs")]
BatchSize = Annotated[int | None, setting("batch_size", "Images per step")]
Lr = Annotated[float | None, setting("lr", "Peak learning rate")]
Optimizer = Annotated[str | None, setting("optimizer", "adamw or sgd")]
Schedule = Annotated[str | None, setting("schedule", "onecycle, cosine or constant")]
WeightDecay = Annotated[float | None, setting("weight_decay", "Weight decay")]
LabelSmoothing = Annotated[float | None, setting("label_smoothing", "Label smoothing")]
ImageSize = Annotated[int | None, setting("image_size", "Input side in pixels, 0 = the model's")]
Width = Annotated[
    float | None, setting("width", "Model channel-width multiplier (hybrid, separable, compact)")
]
Patience = Annotated[
    int | None, setting("patience", "Early-stop after N epochs without a better val_acc, 0 = off")
]
Seed = Annotated[int | None, setting("seed", "Random seed")]
Device = Annotated[str | None, setting("device", "auto, cpu, cuda or mps")]
Threads = Annotated[int | None, setting("threads", "CPU threads, 0 = all cores")]
Flip = Annotated[bool | None, setting("flip", "Random horizontal flips", "--flip/--no-flip")]
Shift = Annotated[float | None, setting("shift", "Max random shift, fraction of the side")]
Scale = Annotated[float | None, setting("scale", "Max random zoom, fraction")]
Jitter = Annotated[float | None, setting("jitter", "Colour jitter strength")]
DiskCache = Annotated[
    bool | None, setting("disk_cache", "Keep decoded images in data/cache/", "--disk-cache/--no-disk-cache")
]
RunName = Annotated[str | None, typer.Option(help="MLflow run name (default: model + settings)")]


def recipe_overrides(values: dict[str, object]) -> dict[str, object]:
    """The TrainConfig fields among a command's arguments (None: not given)."""
    return {
        field.name: values[field.name] for field in dataclasses.fields(TrainConfig) if field.name in values
    }


@app.command()
@friendly
def train(
    ctx: typer.Context,
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
    all_labelled: Annotated[
        bool | None,
        typer.Option(
            "--all-labelled",
            help="Train on train + val for the fixed epochs, no validation: the last epoch is the "
            "model (the final refit once `cv`/`tune` chose the recipe; export it with --run-id)",
            show_default=False,
        ),
    ] = None,
    sync_batchnorm: Annotated[
        bool | None,
        setting(
            "sync_batchnorm",
            "With --nproc on CUDA: BatchNorm statistics over all processes (SyncBatchNorm)",
            "--sync-batchnorm/--no-sync-batchnorm",
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            help="Processes on this machine: N > 1 trains as N torchrun workers (DistributedDataParallel; "
            "--batch-size is the global batch, split over them)"
        ),
    ] = 1,
    lists: ListsDir = paths.LISTS_DIR,
    experiment: Experiment = paths.EXPERIMENT,
    run_name: RunName = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue this MLflow run from its last checkpoint; --epochs, --patience, --device, --nproc, "
            "--threads, --disk-cache and --sync-batchnorm may change, the rest must match it"
        ),
    ] = None,
) -> None:
    """Train a model on the prepared lists, tracked in MLflow."""
    overrides = recipe_overrides(locals())
    if nproc != 1:
        from bitmoji_ml.config import requested_values
        from bitmoji_ml.training.launch import launch_training

        launch_training(
            nproc=nproc,
            arguments=given_options(ctx, leave_out={"nproc"}),
            requested=requested_values(preset, config, overrides),
            lists_dir=lists,
            resume_run_id=resume,
            entry_folder=Path(__file__).resolve().parent,
        )
        return
    from bitmoji_ml.tracking.store import Store
    from bitmoji_ml.training import train_job

    # Under torchrun, rank 0 alone opens the store (inside train_job).
    store = None if "WORLD_SIZE" in os.environ else Store.open()
    result = train_job(
        lists_dir=lists,
        experiment=experiment,
        preset=preset,
        config_file=config,
        overrides=overrides,
        run_name=run_name,
        resume_run_id=resume,
        store=store,
    )
    if result.rank != 0:  # rank 0 reports for every rank
        return
    if result.best_val_acc is None:
        typer.echo(
            f"run {result.run_id}  trained on all {result.train_images} labelled images, no validation; "
            f"the model is epoch {result.best_epoch} (export it: bitmoji export-onnx --run-id {result.run_id})"
        )
    else:
        typer.echo(f"run {result.run_id}  best val acc {result.best_val_acc:.2%} (epoch {result.best_epoch})")
    typer.echo(f"best checkpoint: {result.best_checkpoint}")


def given_options(ctx: typer.Context, *, leave_out: set[str]) -> list[str]:
    """The options given on the command line, written out again as flags (for the torchrun
    workers, which parse the same command): what was left at its default stays unsaid."""
    arguments: list[str] = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        given = source is not None and source.name == "COMMANDLINE"
        if param.name in leave_out or not given or param.param_type_name != "option":
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            arguments.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            arguments += [param.opts[0], str(value)]
    return arguments


@app.command()
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


@app.command()
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


@app.command()
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


@app.command("export-onnx")
@friendly
def export_onnx(
    output: Annotated[Path, typer.Option("--output", help="ONNX file to write")] = paths.ONNX_MODEL,
    run_id: Annotated[str | None, typer.Option(help="Export this run's best checkpoint")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Export this checkpoint file")] = None,
    experiment: Experiment = paths.EXPERIMENT,
    lists: ListsDir = paths.LISTS_DIR,
    quantize: Annotated[str | None, typer.Option(help="Also write an int8 model (int8)")] = None,
    register: Annotated[bool, typer.Option(help="Log to the source run and move @champion")] = True,
) -> None:
    """Export the best model (or --run-id / --checkpoint) to ONNX, proving parity with PyTorch."""
    from bitmoji_ml.export import export_job
    from bitmoji_ml.tracking.store import Store

    store = Store.open() if checkpoint is None or register else None  # a file, not registered: no MLflow
    export_job(
        output=output,
        checkpoint=checkpoint,
        run_id=run_id,
        experiment=experiment,
        lists_dir=lists,
        quantize=quantize,
        register=register,
        store=store,
    )


@app.command()
@friendly
def predict(
    source: Annotated[
        str,
        typer.Argument(
            metavar="FOLDER", help="Folder of face images (--engine ray: any path or URI Ray reads)"
        ),
    ],
    model: Annotated[Path, typer.Option(help="Exported ONNX model")] = paths.ONNX_MODEL,
    output: Annotated[Path, typer.Option("--output", help="CSV file to write")] = paths.PREDICTIONS_CSV,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per inference batch (default: 64, one batch per thread)")
    ] = None,
    threads: Annotated[int, typer.Option(help="Decode and inference threads (default: all cores)")] = 0,
    recursive: Annotated[bool, typer.Option(help="Include sub-folders")] = False,
    kaggle: Annotated[bool, typer.Option(help="Write a Kaggle submission (image_id,is_male)")] = False,
    template: Annotated[
        Path | None, typer.Option(help="sample_submission.csv (default: beside FOLDER)")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Exit 1, writing nothing, if any file could not be read")
    ] = False,
    engine: Annotated[str, typer.Option(help="plain (this machine), or ray (writes Parquet)")] = "plain",
    ray_address: Annotated[
        str | None, typer.Option(help="--engine ray: cluster address (auto inside `ray job submit`)")
    ] = None,
    actors: Annotated[int, typer.Option(help="--engine ray: model actors")] = 1,
) -> None:
    """Predict every image in FOLDER with the ONNX model (no torch, no MLflow)."""
    from bitmoji_ml.serving.folder_engine import PREDICT_BATCH

    batch_size = PREDICT_BATCH if batch_size is None else batch_size
    if engine == "ray":
        return predict_ray(source, model, output, batch_size, ray_address, actors, strict)
    if engine != "plain":
        raise BitmojiError(f"unknown --engine {engine!r}: use plain or ray")
    folder = Path(source)
    from bitmoji_ml.console import progress
    from bitmoji_ml.data.labels import predicted_classes
    from bitmoji_ml.files import write_text_atomic
    from bitmoji_ml.serving.folder_engine import (
        OnnxModel,
        find_images,
        kaggle_csv,
        predict_paths,
        predictions_csv,
    )

    # Each thread decodes a batch and runs a one-thread onnxruntime pass on it: `threads` busy
    # cores and no stage waiting on another (measured faster than a decode pool feeding one
    # inference thread, which the network's CPU time bounds).
    threads = threads or os.cpu_count() or 1
    onnx_model = OnnxModel.load(model, 1)
    images = find_images(folder, recursive)

    def warn(path: Path, message: str) -> None:
        typer.echo(f"warning: skipped {message}", err=True)

    with progress("predicting", total=len(images)) as advance:
        result = predict_paths(onnx_model, images, batch_size, threads, on_skip=warn, on_batch=advance)
    if not result.paths:
        raise BitmojiError(f"none of the {len(images)} image file(s) in {folder} could be read")
    if strict and result.skipped:
        raise BitmojiError(
            f"--strict: {len(result.skipped)} file(s) could not be read; {output} was not written"
        )
    if kaggle:
        text = kaggle_csv(result, folder, template or folder.resolve().parent / "sample_submission.csv")
    else:
        text = predictions_csv(result, folder)
    write_text_atomic(output, text)
    male = float(predicted_classes(result.prob_male).mean())
    typer.echo(
        f"{len(result.paths)} images, {male:.1%} male, {len(result.skipped)} skipped, "
        f"{result.seconds:.2f}s, {len(result.paths) / result.seconds:,.0f} images/s -> {output}"
    )


def predict_ray(
    source: str, model: Path, output: Path, batch_size: int, address: str | None, actors: int, strict: bool
) -> None:
    """`bitmoji predict --engine ray`: Ray Data + an actor pool, to a Parquet dataset."""
    from bitmoji_ml.serving.ray_engine import predict_with_ray

    if output == paths.PREDICTIONS_CSV:
        output = output.with_suffix(".parquet")
    result = predict_with_ray(
        source=source,
        model=model,
        output=str(output),
        address=address,
        actors=actors,
        batch_size=batch_size,
        strict=strict,
    )
    typer.echo(
        f"{result.rows} images, {result.errors} with an error, {result.seconds:.2f}s -> {output} (Parquet)"
    )


@app.command()
@friendly
def evaluate(
    model: Annotated[
        Path | None, typer.Option(help="ONNX file to score (default: the registry's @champion)")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Score the ONNX model `export-onnx` logged to this run")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Labelled set: a list from `prepare` (`<image path> <0|1>` lines) or a CSV in the "
            "train.csv format (image_id,is_male 1/-1) (default: the validation list)",
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            help="Image folder of a --labels CSV (default: trainimages/ beside it, else its folder)"
        ),
    ] = None,
    lists: ListsDir = paths.LISTS_DIR,
    experiment: Experiment = paths.EXPERIMENT,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Folder to keep the plots, metrics.json and predictions.csv in"),
    ] = None,
    log: Annotated[bool, typer.Option(help="Log an evaluation run to MLflow")] = True,
    threads: Annotated[int, typer.Option(help="Decode and inference threads (default: all cores)")] = 0,
) -> None:
    """Score a model on a labelled set: metrics table, plots, and an MLflow evaluation run."""
    from bitmoji_ml.evaluation import evaluate_job
    from bitmoji_ml.tracking.store import Store

    store = Store.open() if model is None or log else None  # a file, not logged: no MLflow
    evaluate_job(
        model=model,
        run_id=run_id,
        labels_file=labels,
        images_dir=images,
        lists_dir=lists,
        experiment=experiment,
        output_dir=output,
        log_run=log,
        threads=threads,
        store=store,
    )


@app.command()
@friendly
def runs(
    ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID", help="Only these runs (ids or unique prefixes)", show_default=False),
    ] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Show the given runs side by side")] = False,
    evaluations: Annotated[
        bool, typer.Option("--evaluations", help="List the evaluation runs instead")
    ] = False,
    experiment: Experiment = paths.EXPERIMENT,
) -> None:
    """Table of the experiment's training runs, best validation accuracy first.

    `bitmoji runs --compare ID ID ...` shows those runs field by field."""
    from bitmoji_ml import comparison
    from bitmoji_ml.report import format_table
    from bitmoji_ml.tracking.listing import experiment_runs
    from bitmoji_ml.tracking.store import Store

    if compare and not ids:
        raise BitmojiError(
            "--compare needs run ids: `bitmoji runs --compare ID ID` (ids from `bitmoji runs`)"
        )
    store = Store.open()
    found = experiment_runs(store, experiment=experiment)
    if compare:  # any runs side by side, training or evaluation
        chosen = comparison.select_runs(found.training + found.evaluations, ids)
        typer.echo(format_table(*comparison.compare_table(chosen)))
        return
    listed = found.evaluations if evaluations else found.training
    if ids:
        listed = comparison.select_runs(listed, ids)
    kind = "evaluation runs" if evaluations else "training runs"
    if not listed:
        hint = "run `bitmoji evaluate`" if evaluations else "run `bitmoji train`"
        raise BitmojiError(f"no {kind} yet in experiment {experiment!r}: {hint}")
    table = comparison.evaluations_table if evaluations else comparison.runs_table
    typer.echo(format_table(*table(listed)))
    note = (
        ""
        if evaluations or not found.evaluations
        else f"; {len(found.evaluations)} evaluation run(s): --evaluations"
    )
    typer.echo(f"{len(listed)} {kind} in {experiment} ({store.uri}){note}")


@app.command()
@friendly
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 5000,
    experiment: Experiment = paths.EXPERIMENT,
) -> None:
    """Start the MLflow UI on the project's store (127.0.0.1 only) until Ctrl-C, SIGTERM or SIGHUP."""
    from bitmoji_ml.serving import processes as serving
    from bitmoji_ml.tracking.names import evaluation_experiment
    from bitmoji_ml.tracking.store import Store

    store = Store.open()
    command = serving.mlflow_ui_command(uri=store.uri, artifact_root=store.artifact_root, port=port)
    serving.check_port_free(port=port)
    typer.echo(f"MLflow UI for {store.uri} at {serving.local_url(port)}  (Ctrl-C to stop)")
    for kind, name in (("training runs", experiment), ("evaluation runs", evaluation_experiment(experiment))):
        experiment_id = store.find_experiment(name)
        if experiment_id is not None:
            typer.echo(f"{kind} ({name}): {serving.runs_page_url(port=port, experiment_id=experiment_id)}")
        elif name == experiment:
            typer.echo(f"experiment {experiment} has no runs yet (run `bitmoji train`)")
    stopped = serving.run_in_foreground(command)
    if stopped.stopped_by:
        typer.echo(f"stopped the MLflow UI ({stopped.stopped_by})")
    elif stopped.code != 0:
        raise BitmojiError(f"the MLflow UI exited with code {stopped.code} (see its messages above)")


@app.command()
@friendly
def serve(
    model_uri: Annotated[
        str, typer.Option(help="MLflow model URI to serve")
    ] = f"models:/{paths.REGISTERED_MODEL}@champion",
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 5001,
    workers: Annotated[int, typer.Option(help="Server worker processes")] = 1,
) -> None:
    """Serve the registered image model over REST on 127.0.0.1 until Ctrl-C (prints a curl line)."""
    from bitmoji_ml.serving.model_server import serve_model
    from bitmoji_ml.tracking.store import tracking_uri

    stopped = serve_model(store_uri=tracking_uri(), model_uri=model_uri, port=port, workers=workers)
    if stopped.stopped_by:
        typer.echo(f"stopped the model server ({stopped.stopped_by})")
    elif stopped.code != 0:
        raise BitmojiError(f"the model server exited with code {stopped.code} (see its messages above)")


def main() -> None:
    """Entry point for `python cli.py`."""
    app(prog_name="bitmoji")


if __name__ == "__main__":
    sys.exit(main())
