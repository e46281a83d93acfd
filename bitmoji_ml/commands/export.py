"""`bitmoji export-onnx`: the best checkpoint to ONNX, with parity, registered (as a version of
the registered model named after the experiment) and possibly its @champion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands import views
from bitmoji_ml.commands.options import Experiment, ListsDir, friendly

# What export's calls in the MLflow process use: finding the checkpoint, registering the export.
EXPORT_MODULES = (
    "bitmoji_ml.tracking.ranking",
    "bitmoji_ml.export.register",
    "bitmoji_ml.tracking.registration",
)


@friendly
def export_onnx(
    output: Annotated[Path, typer.Option("--output", help="ONNX file to write")] = paths.ONNX_MODEL,
    run_id: Annotated[str | None, typer.Option(help="Export this run's best checkpoint")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Export this checkpoint file")] = None,
    cv_run: Annotated[
        str | None,
        typer.Option(
            help="Export this `bitmoji cv` run's fold models as one model (the mean of their probabilities)"
        ),
    ] = None,
    experiment: Experiment = paths.EXPERIMENT,
    lists: ListsDir = paths.LISTS_DIR,
    quantize: Annotated[str | None, typer.Option(help="Also write an int8 model (int8)")] = None,
    register: Annotated[
        bool, typer.Option(help="Log to the source run, register it and decide @champion")
    ] = True,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote",
            help="Make it @champion even if it is not better than the current one (or not comparable)",
        ),
    ] = False,
    verdict: Annotated[
        Path | None,
        typer.Option(
            help="With --cv-run: benchmarks/ensemble_protocol.py's verdict.json; @champion moves to the "
            "ensemble if it shows this recipe's ensembles better than its single models"
        ),
    ] = None,
) -> None:
    """Export the best model (or --run-id / --checkpoint) to ONNX, proving parity with PyTorch."""
    from bitmoji_ml.tracking.mlflow_process import mlflow_process_when

    if cv_run is not None:
        export_cv_ensemble(
            cv_run, output, lists, run_id, checkpoint, quantize, register, promote, verdict, experiment
        )
        return
    if verdict is not None:
        from bitmoji_ml.errors import BitmojiError

        raise BitmojiError("--verdict applies to --cv-run (an ensemble) only")
    # MLflow loads, opens the store and finds the checkpoint in a child process while this one
    # imports torch and the ONNX exporter; a file, not registered, needs no MLflow at all.
    with mlflow_process_when(checkpoint is None or register, preload=EXPORT_MODULES) as store:
        from bitmoji_ml.export.job import export_job

        result = export_job(
            output=output,
            checkpoint=checkpoint,
            run_id=run_id,
            experiment=experiment,
            lists_dir=lists,
            quantize=quantize,
            register=register,
            promote=promote,
            store=store,
        )
    views.show_export(result)


def export_cv_ensemble(
    cv_run: str,
    output: Path,
    lists: Path,
    run_id: str | None,
    checkpoint: Path | None,
    quantize: str | None,
    register: bool,
    promote: bool,
    verdict: Path | None = None,
    experiment: str = paths.EXPERIMENT,
) -> None:
    """`export-onnx --cv-run ID`: the fold models of a cv run as one ONNX model."""
    from bitmoji_ml.errors import BitmojiError
    from bitmoji_ml.export.ensemble import export_ensemble_job
    from bitmoji_ml.export.verdict import read_verdict
    from bitmoji_ml.tracking.store import Store

    if run_id or checkpoint:
        raise BitmojiError("give one of --cv-run, --run-id and --checkpoint")
    if quantize:
        raise BitmojiError("--quantize does not apply to --cv-run yet: export the ensemble in fp32")
    result = export_ensemble_job(
        cv_run_id=cv_run,
        output=output,
        store=Store.open(),
        experiment=experiment,
        lists_dir=lists,
        register=register,
        promote=promote,
        verdict=read_verdict(verdict) if verdict is not None else None,
    )
    views.show_ensemble_export(result)
