"""`bitmoji train`: one training run, in this process or as torchrun workers."""

from __future__ import annotations

import os
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
            entry_folder=Path(__file__).resolve().parents[2],
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
