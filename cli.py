"""The `bitmoji` command line: one small function per stage. Parse, call the library, print.

Heavy libraries (torch, mlflow, onnxruntime) are imported inside the commands that need them,
so `bitmoji --help`, `prepare` and `predict` start fast.
"""

from __future__ import annotations

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
) -> None:
    """Check the dataset and write train/val/test lists plus manifest.json."""
    from bitmoji_ml.data.dataset import load_dataset
    from bitmoji_ml.data.lists import write_lists
    from bitmoji_ml.report import format_table

    root = paths.resolve_data_dir(data_dir)
    dataset = load_dataset(root)
    manifest = write_lists(dataset, lists, val_fraction=val_fraction, seed=seed, split=split)
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
    typer.echo(
        f"wrote {lists}/train.txt, val.txt, test.txt, manifest.json (digest {manifest['digest'][:12]})"
    )


def setting(field: str, text: str, *names: str):
    """A train flag whose help shows the default from TrainConfig (presets may change it)."""
    return typer.Option(*names, help=f"{text} (default: {getattr(TrainConfig, field)})", show_default=False)


@app.command()
@friendly
def train(
    ctx: typer.Context,
    preset: Annotated[str, typer.Option(help="default, seed-cnn (the baseline) or resnet18")] = "default",
    config: Annotated[Path | None, typer.Option("--config", help="TOML file of TrainConfig values")] = None,
    model: Annotated[str | None, setting("model", "compact, seed-cnn or resnet18")] = None,
    epochs: Annotated[int | None, setting("epochs", "Training epochs")] = None,
    batch_size: Annotated[int | None, setting("batch_size", "Images per step")] = None,
    lr: Annotated[float | None, setting("lr", "Peak learning rate")] = None,
    optimizer: Annotated[str | None, setting("optimizer", "adamw or sgd")] = None,
    schedule: Annotated[str | None, setting("schedule", "onecycle, cosine or constant")] = None,
    weight_decay: Annotated[float | None, setting("weight_decay", "Weight decay")] = None,
    label_smoothing: Annotated[float | None, setting("label_smoothing", "Label smoothing")] = None,
    image_size: Annotated[int | None, setting("image_size", "Input side in pixels, 0 = the model's")] = None,
    patience: Annotated[
        int | None, setting("patience", "Early-stop after N epochs without a better val_acc, 0 = off")
    ] = None,
    seed: Annotated[int | None, setting("seed", "Random seed")] = None,
    device: Annotated[str | None, setting("device", "auto, cpu, cuda or mps")] = None,
    threads: Annotated[int | None, setting("threads", "CPU threads, 0 = all cores")] = None,
    flip: Annotated[bool | None, setting("flip", "Random horizontal flips", "--flip/--no-flip")] = None,
    shift: Annotated[float | None, setting("shift", "Max random shift, fraction of the side")] = None,
    scale: Annotated[float | None, setting("scale", "Max random zoom, fraction")] = None,
    jitter: Annotated[float | None, setting("jitter", "Colour jitter strength")] = None,
    disk_cache: Annotated[
        bool | None,
        setting("disk_cache", "Keep decoded images in data/cache/", "--disk-cache/--no-disk-cache"),
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
    run_name: Annotated[str | None, typer.Option(help="MLflow run name (default: model + settings)")] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue this MLflow run from its last checkpoint; --epochs, --patience, --device, --nproc, "
            "--threads, --disk-cache and --sync-batchnorm may change, the rest must match it"
        ),
    ] = None,
) -> None:
    """Train a model on the prepared lists, tracked in MLflow."""
    overrides = {key: value for key, value in locals().items() if key not in NOT_CONFIG}
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
    folder: Annotated[Path, typer.Argument(help="Folder of face images")],
    model: Annotated[Path, typer.Option(help="Exported ONNX model")] = paths.ONNX_MODEL,
    output: Annotated[Path, typer.Option("--output", help="CSV file to write")] = paths.PREDICTIONS_CSV,
    batch_size: Annotated[int, typer.Option(help="Images per inference batch")] = 256,
    threads: Annotated[int, typer.Option(help="Decode and inference threads (default: all cores)")] = 0,
    recursive: Annotated[bool, typer.Option(help="Include sub-folders")] = False,
    kaggle: Annotated[bool, typer.Option(help="Write a Kaggle submission (image_id,is_male)")] = False,
    template: Annotated[
        Path | None, typer.Option(help="sample_submission.csv (default: beside FOLDER)")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Exit 1, writing nothing, if any file could not be read")
    ] = False,
) -> None:
    """Predict every image in FOLDER with the ONNX model (no torch, no MLflow)."""
    from bitmoji_ml.console import progress
    from bitmoji_ml.data.labels import predicted_classes
    from bitmoji_ml.files import write_text_atomic
    from bitmoji_ml.inference import OnnxModel, find_images, kaggle_csv, predict_paths, predictions_csv

    # Decoding and inference overlap: decode threads get every core, onnxruntime half of them
    # (measured fastest on 2 cores; more threads only contend).
    threads = threads or os.cpu_count() or 1
    onnx_model = OnnxModel.load(model, max(1, threads // 2))
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
    from bitmoji_ml import serving
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


NOT_CONFIG = {"ctx", "preset", "config", "lists", "experiment", "run_name", "resume", "nproc"}


def main() -> None:
    """Entry point for `python cli.py`."""
    app(prog_name="bitmoji")


if __name__ == "__main__":
    sys.exit(main())
