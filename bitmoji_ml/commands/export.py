"""`bitmoji export-onnx`: the best checkpoint to ONNX, with parity, registered as @champion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands import views
from bitmoji_ml.commands.options import Experiment, ListsDir, friendly


@friendly
def export_onnx(
    output: Annotated[Path, typer.Option("--output", help="ONNX file to write")] = paths.ONNX_MODEL,
    run_id: Annotated[str | None, typer.Option(help="Export this run's best checkpoint")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Export this checkpoint file")] = None,
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
) -> None:
    """Export the best model (or --run-id / --checkpoint) to ONNX, proving parity with PyTorch."""
    from bitmoji_ml.export.job import export_job
    from bitmoji_ml.tracking.store import Store

    store = Store.open() if checkpoint is None or register else None  # a file, not registered: no MLflow
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
