"""`bitmoji predict` (a folder through the ONNX model, no torch or MLflow) and `evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands import views
from bitmoji_ml.commands.options import Experiment, ImageColumn, LabelColumn, ListsDir, friendly
from bitmoji_ml.serving.predict_job import PARQUET_OUTPUT

# What evaluate's calls in the MLflow process use: finding the model, logging the evaluation.
EVALUATE_MODULES = ("bitmoji_ml.tracking.resolve", "bitmoji_ml.tracking.evaluations")


@friendly
def predict(
    source: Annotated[
        str,
        typer.Argument(
            metavar="FOLDER",
            help="Folder of images (--engine ray: also a URI Ray reads, with --recursive)",
        ),
    ],
    model: Annotated[Path, typer.Option(help="Exported ONNX model")] = paths.ONNX_MODEL,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help=f"File to write (default: {paths.PREDICTIONS_CSV}; --engine ray: the Parquet dataset "
            f"{PARQUET_OUTPUT})",
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per inference batch (default: 64, one batch per thread)")
    ] = None,
    threads: Annotated[
        int, typer.Option(help="Decode and inference threads (default: all cores)", show_default=False)
    ] = 0,
    recursive: Annotated[bool, typer.Option(help="Include sub-folders (both engines)")] = False,
    kaggle: Annotated[
        bool, typer.Option(help="Write a Kaggle submission (image_id,is_male; Bitmoji models only)")
    ] = False,
    template: Annotated[
        Path | None, typer.Option(help="--kaggle: sample_submission.csv (default: beside FOLDER)")
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
    """Predict every image in FOLDER with the ONNX model (no torch, no MLflow): a label and a
    probability per class (Bitmoji: is_male, prob_male). Unreadable files get a warning each and
    no prediction (--engine ray keeps their rows, with the error)."""
    from bitmoji_ml.serving.predict_job import predict_job

    result = predict_job(
        source,
        model=model,
        output=output,
        engine=engine,
        batch_size=batch_size,
        threads=threads,
        recursive=recursive,
        kaggle=kaggle,
        template=template,
        strict=strict,
        ray_address=ray_address,
        actors=actors,
    )
    views.show_prediction(result)


@friendly
def evaluate(
    model: Annotated[
        Path | None, typer.Option(help="ONNX file to score (default: <experiment>@champion in the registry)")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Score the ONNX model `export-onnx` logged to this run")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Labelled set: a list from `prepare` (`<image path> <class index>` lines, the classes "
            "in the manifest beside it), a CSV in Bitmoji's train.csv format (image_id,is_male 1/-1), or a "
            "CSV of image file and class name (default: the validation list); its classes must be the model's",
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            help="Image folder of a --labels CSV (default: trainimages/ beside it, else its folder)"
        ),
    ] = None,
    image_column: ImageColumn = None,
    label_column: LabelColumn = None,
    lists: ListsDir = paths.LISTS_DIR,
    experiment: Experiment = paths.EXPERIMENT,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Folder to keep the plots, metrics.json and predictions.csv in"),
    ] = None,
    log: Annotated[bool, typer.Option(help="Log an evaluation run to MLflow")] = True,
    threads: Annotated[
        int, typer.Option(help="Decode and inference threads (default: all cores)", show_default=False)
    ] = 0,
) -> None:
    """Score a model on a labelled set: metrics table, plots, and an MLflow evaluation run."""
    # MLflow loads and opens the store in a child process while this one imports onnxruntime
    # and scikit-learn (and scores a --model file); a file, not logged, needs no MLflow at all.
    from bitmoji_ml.tracking.mlflow_process import mlflow_process_when

    with mlflow_process_when(model is None or log, preload=EVALUATE_MODULES) as store:
        from bitmoji_ml.evaluation import evaluate_job

        result = evaluate_job(
            model=model,
            run_id=run_id,
            labels_file=labels,
            images_dir=images,
            image_column=image_column,
            label_column=label_column,
            lists_dir=lists,
            experiment=experiment,
            output_dir=output,
            log_run=log,
            threads=threads,
            store=store,
        )
    views.show_evaluation(result)
