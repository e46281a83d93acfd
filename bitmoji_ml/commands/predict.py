"""`bitmoji predict` (a folder through the ONNX model, no torch or MLflow) and `evaluate`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands.options import Experiment, ListsDir, friendly
from bitmoji_ml.errors import BitmojiError


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
    from bitmoji_ml.serving.folder_engine import find_images, kaggle_csv, predict_paths, predictions_csv
    from bitmoji_ml.serving.onnx_model import OnnxModel

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
