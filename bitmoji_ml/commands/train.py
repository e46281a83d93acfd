"""`bitmoji train`: one training run, in this process or as torchrun workers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands import views
from bitmoji_ml.commands.options import Experiment, ListsDir, RunName, friendly, recipe_options
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.recipe import ResolvedRecipe

Nproc = Annotated[
    int,
    typer.Option(
        help="Processes on this machine: N > 1 trains as N torchrun workers (DistributedDataParallel; "
        "--batch-size is the global batch, split over them)"
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue run --run-id from its last checkpoint; --epochs, --patience, --device, --nproc, "
        "--threads, --disk-cache and --sync-batchnorm may change, the rest must match it",
    ),
]
RunId = Annotated[str | None, typer.Option(help="With --resume: the MLflow run to continue")]


@friendly
@recipe_options("train")
def train(
    recipe: ResolvedRecipe,
    nproc: Nproc = 1,
    lists: ListsDir = paths.LISTS_DIR,
    experiment: Experiment = paths.EXPERIMENT,
    run_name: RunName = None,
    resume: Resume = False,
    run_id: RunId = None,
) -> None:
    """Train a model on the prepared lists, tracked in MLflow."""
    resume_run_id = run_to_resume(resume=resume, run_id=run_id)
    if nproc != 1:
        from bitmoji_ml.training.launch import launch_training

        launch_training(
            nproc=nproc,
            recipe=recipe,
            lists_dir=lists,
            experiment=experiment,
            run_name=run_name,
            resume_run_id=resume_run_id,
            entry_folder=Path(__file__).resolve().parents[2],
        )
        return
    # MLflow loads and opens the store in a child process while this one imports torch; under
    # torchrun rank 0 alone opens it, and --resume reads the run first: both in this process.
    from bitmoji_ml.tracking.mlflow_process import TRAINING_RUN_MODULES, mlflow_process_when

    in_process = "WORLD_SIZE" in os.environ or bool(resume_run_id)
    with mlflow_process_when(not in_process, experiment, preload=TRAINING_RUN_MODULES) as mlflow_process:
        from bitmoji_ml.training import train_job

        result = train_job(
            lists_dir=lists,
            experiment=experiment,
            recipe=recipe,
            run_name=run_name,
            resume_run_id=resume_run_id,
            mlflow_process=mlflow_process,
        )
    if result.rank == 0:  # rank 0 reports for every rank
        views.show_training(result)


def run_to_resume(*, resume: bool, run_id: str | None) -> str | None:
    """The run `--resume --run-id ID` continues (None for a new run)."""
    if resume and not run_id:
        raise BitmojiError("--resume continues a run: name it with --run-id ID (ids from `bitmoji runs`)")
    if run_id and not resume:
        raise BitmojiError(
            f"--run-id names the run to continue: add --resume (bitmoji train --resume --run-id {run_id})"
        )
    return run_id
