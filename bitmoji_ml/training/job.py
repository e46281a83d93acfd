"""`bitmoji train`: resolve the config (or continue a run under the resume policy), decode the
lists, build the training state, and train inside one MLflow run. Everything that can fail on
user input fails before the run is created.

Under torchrun every rank runs this job (`distributed`): rank 0 opens the store, loads the run
to resume and shares it, creates the run and logs to it; the other ranks log to a `NullRun`."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bitmoji_ml.checkpoints import checkpoint_classes, read_checkpoint, train_state_of
from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.lists import manifest_classes, read_manifest
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import count_parameters
from bitmoji_ml.recipe import Recipe, ResolvedRecipe, recipe_from_values, recipe_toml
from bitmoji_ml.tracking.names import BEST_ON_VAL, LAST_EPOCH
from bitmoji_ml.training import distributed, sharding
from bitmoji_ml.training.data import TrainData, load_data
from bitmoji_ml.training.launch import per_rank_batch_size
from bitmoji_ml.training.loop import Tracker, TrainResult, fit
from bitmoji_ml.training.resume import (
    check_resumable,
    check_same_classes,
    check_same_lists,
    resume_config,
    resumed_run_name,
)
from bitmoji_ml.training.run_log import open_run, open_tracking
from bitmoji_ml.training.settings import (
    default_run_name,
    preprocess_for,
    resolve_config,
    select_device,
    use_cpu,
)
from bitmoji_ml.training.state import TrainState, new_train_state
from bitmoji_ml.training.teacher import teacher_tags, with_teacher

if TYPE_CHECKING:  # mlflow loads only when a run starts
    from bitmoji_ml.tracking.mlflow_process import MlflowProcess
    from bitmoji_ml.tracking.runs import TrainingRun
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainJobResult:
    """What `bitmoji train` reports."""

    run_id: str
    best_val_acc: float | None  # None with --all-labelled: no validation
    best_epoch: int  # with --all-labelled: the last epoch, whose weights are the model
    best_checkpoint: str  # local path of the best epoch's best.pt in the run's artifacts
    train_images: int
    train_seconds: float
    history: list[dict[str, float]]
    config: Recipe  # as resolved: the image size, device and threads actually used
    classes: Classes  # what the model tells apart (the lists' manifest)
    rank: int = 0  # under torchrun, the rank that returns this; rank 0 alone reports


@dataclasses.dataclass
class Resume:
    """What `--resume` continues: the run's last.pt, checked against the resume policy."""

    config: Recipe
    changed: dict[str, str]  # settings that differ from the checkpoint, new values
    train_state: dict[str, Any]
    run_name: str
    saved_run_name: str
    saved_world_size: int  # processes the run trained on so far


def train_job(
    *,
    lists_dir: Path,
    experiment: str,
    recipe: ResolvedRecipe,
    run_name: str | None = None,
    resume_run_id: str | None = None,
    store: Store | None = None,
    mlflow_process: MlflowProcess | None = None,
) -> TrainJobResult:
    """Train a new run of `recipe`, or continue run `resume_run_id` from its last checkpoint
    with the settings `recipe` gives (in one process, or as one rank of a torchrun job). A new
    run in one process can log through `mlflow_process` (started before torch was imported)
    instead of `store`."""
    requested = recipe.given_values()
    with distributed.process_group(select_device(recipe.recipe.device).type):
        tracking = mlflow_process or distributed.run_on_main(lambda: open_tracking(store, experiment))
        manifest = read_manifest(lists_dir)
        resume = None
        if resume_run_id:
            resume = distributed.share_from_main(
                lambda: load_resume(tracking.store, resume_run_id, requested, manifest, lists_dir, run_name)
            )
        config = resume.config if resume else resolve_config(recipe.recipe)
        if resume:
            logger.info(
                "resuming run %s after epoch %d, to epoch %d",
                resume_run_id,
                resume.train_state["epoch"],
                config.epochs,
            )
        use_cpu(config.threads)
        data = decode(lists_dir, manifest, config)
        if config.teacher:
            data = with_teacher(
                data, config.teacher, config.teacher_weight, preprocess_for(config), config.threads
            )
        state = build_state(config, data, resume)
        name = resume.run_name if resume else run_name or default_run_name(config)
        selection = LAST_EPOCH if config.all_labelled else BEST_ON_VAL
        with open_run(tracking, name, resume_run_id, selection) as run:
            distributed.report_run_id(run.run_id)
            if tracking is not None:
                logger.info("MLflow run %s (%s, experiment %s)", run.run_id, tracking.uri, experiment)
            log_start(run, config, manifest, state, lists_dir, resume)
            header = checkpoint_header(config, manifest, run.run_id, name)
            result = train_in_run(config, data, state, run, header, select_best=not config.all_labelled)
            run.log_summary(summary_metrics(result, selected=not config.all_labelled))
        rank = distributed.rank()
    return TrainJobResult(
        run_id=run.run_id,
        best_val_acc=result.best.get("val_acc"),
        best_epoch=int(result.best["epoch"]),
        best_checkpoint=result.best_checkpoint,
        train_images=len(data.train_labels),
        train_seconds=result.train_seconds,
        history=result.history,
        config=config,
        classes=data.classes,
        rank=rank,
    )


def load_resume(
    store: Store,
    run_id: str,
    requested: dict[str, Any],
    manifest: dict,
    lists_dir: Path,
    run_name: str | None,
) -> Resume:
    """Download the run's last.pt and check it against the lists and the requested settings."""
    from bitmoji_ml.tracking.names import LAST_CHECKPOINT
    from bitmoji_ml.tracking.runs import download_run_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        path = download_run_checkpoint(store, run_id=run_id, name=LAST_CHECKPOINT, folder=Path(folder))
        payload = read_checkpoint(path)
    train_state = train_state_of(payload, f"run {run_id}'s last.pt")
    check_same_classes(
        saved=checkpoint_classes(payload),
        classes=manifest_classes(manifest),
        lists_dir=lists_dir,
        run_id=run_id,
    )
    check_same_lists(
        saved_digest=payload.get("data_digest", ""),
        digest=manifest.get("digest", ""),
        lists_dir=lists_dir,
        run_id=run_id,
    )
    saved = recipe_from_values(payload["config"])
    resumed = resume_config(saved, requested)
    check_resumable(saved=saved, config=resumed.config, epochs_done=train_state["epoch"], run_id=run_id)
    saved_name = payload.get("run_name", "")
    name = resumed_run_name(saved=saved, config=resumed.config, saved_name=saved_name, requested=run_name)
    world = int(payload.get("world_size", 1))
    return Resume(resumed.config, resumed.changed, train_state, name, saved_name, world)


def decode(lists_dir: Path, manifest: dict, config: Recipe) -> TrainData:
    """The lists decoded at the config's input size."""
    started = time.perf_counter()
    data = load_data(lists_dir, manifest, preprocess_for(config), config.disk_cache, config.all_labelled)
    logger.info(
        "decoded %d train + %d val images in %.1fs; model %s on %s, %d thread%s%s",
        len(data.train_labels),
        0 if data.val_labels is None else len(data.val_labels),
        time.perf_counter() - started,
        config.model,
        config.device,
        config.threads,
        "" if config.threads == 1 else "s",
        f" per process, {distributed.world_size()} processes" if distributed.world_size() > 1 else "",
    )
    return data


def build_state(config: Recipe, data: TrainData, resume: Resume | None) -> TrainState:
    """A fresh training state, or the resumed one with its schedule re-planned to the epochs;
    wrapped for data-parallel training under torchrun."""
    world = distributed.world_size()
    try:
        steps = sharding.steps_per_epoch(
            len(data.train_labels), batch_size=config.batch_size, world_size=world
        )
        per_rank_batch_size(config.batch_size, world)
    except BitmojiError as error:
        raise distributed.rank_error(str(error)) from None
    device = distributed.local_device(config.device)
    state = new_train_state(config, preprocess_for(config), device, steps, len(data.classes))
    if resume is not None:
        state.load_state_dict(resume.train_state)
        state.schedule = state.schedule.replanned(end_step=config.epochs * steps, at_step=state.step)
    state.replica = distributed.data_parallel(state.model, sync_batchnorm=config.sync_batchnorm)
    return state


def log_start(
    run: TrainingRun,
    config: Recipe,
    manifest: dict,
    state: TrainState,
    lists_dir: Path,
    resume: Resume | None,
) -> None:
    """Params, tags and datasets of a new run; for a resumed one, what --resume changed."""
    tags = run_tags(config, state)
    params = {**config.to_params(), **distributed.run_params(config.batch_size)}
    run.log_start(
        params=params,
        tags=tags,
        manifest=manifest,
        lists_dir=lists_dir,
        all_labelled=config.all_labelled,
        recipe=recipe_file(config),
    )
    changed = dict(resume.changed) if resume else {}
    if resume and resume.saved_world_size != distributed.world_size():
        changed["world_size"] = str(distributed.world_size())
    if resume and (changed or resume.run_name != resume.saved_run_name):
        run.log_resume(changed=changed, run_name=resume.run_name)


def train_in_run(
    config: Recipe,
    data: TrainData,
    state: TrainState,
    run: Tracker,
    header: dict,
    select_best: bool = True,
    rerun_hint: str | None = None,
) -> TrainResult:
    """`fit` in a scratch folder the run's artifacts are copied from. On Ctrl-C or SIGTERM the
    run can be resumed with `train --resume`, unless it is part of another job (a cv fold, a
    tune trial), which says with `rerun_hint` what to do instead."""
    try:
        with tempfile.TemporaryDirectory(prefix="bitmoji-train-") as workdir:
            return fit(
                config=config,
                data=data,
                state=state,
                tracker=run,
                workdir=Path(workdir),
                header=header,
                select_best=select_best,
            )
    except KeyboardInterrupt:
        run_id = getattr(run, "run_id", "?")
        then = rerun_hint or f"continue it with `bitmoji train --resume --run-id {run_id}`"
        logger.info("run %s ends as KILLED after epoch %d; %s", run_id, state.epoch, then)
        raise
    except Exception:
        if distributed.world_size() > 1 and distributed.is_main():  # often a peer that died
            logger.error(
                "training stopped on rank 0 (if another process died, its messages say why): run %s "
                "ends as FAILED; continue it from its last checkpoint with `bitmoji train --resume --run-id %s`",
                run.run_id,
                run.run_id,
            )
        raise


def recipe_file(config: Recipe) -> str:
    """The run's recipe.toml: what `--config` reads to train the same recipe again."""
    comment = "the run's recipe; device, threads and disk_cache are left to the machine that trains it"
    return recipe_toml(config.recipe_values(), [comment])


def checkpoint_header(config: Recipe, manifest: dict, run_id: str, run_name: str) -> dict[str, Any]:
    """What every checkpoint of the run carries besides weights, metrics and training state."""
    return {
        "model": config.model,
        "config": config.values(),
        "preprocess": preprocess_for(config).to_dict(),
        "data_digest": manifest.get("digest", ""),
        "classes": manifest_classes(manifest).to_dict(),  # output i is P(names[i])
        "mlflow_run_id": run_id,
        "run_name": run_name,
        "world_size": distributed.world_size(),
    }


def run_tags(config: Recipe, state: TrainState) -> dict[str, str]:
    """What the run trained (TrainingRun.log_start adds where it ran and the data digest)."""
    return {
        "model": config.model,
        "parameters": str(count_parameters(state.model)),
        "device": config.device,
        # A plain str: torch's own str class would make the logging child import torch to unpickle it.
        "torch_version": str(torch.__version__),
        **teacher_tags(config.teacher),
    }


def summary_metrics(result: TrainResult, *, selected: bool = True) -> dict[str, float]:
    """Run-level results, for sorting runs: the last epoch's `final_val_*` (when there was
    validation), which every training run logs, `cv` folds and refits included, so one column
    compares them all; with best.pt selected on val_acc, the best epoch's `best_val_*` too."""
    timing = {"train_seconds": result.train_seconds, "epochs_run": len(result.history)}
    last = result.history[-1]
    final = {f"final_{key}": last[key] for key in ("val_acc", "val_loss") if key in last}
    if selected:
        best = {"best_val_acc": result.best["val_acc"], "best_val_loss": result.best["val_loss"]}
        return {**best, "best_epoch": result.best["epoch"], **final, **timing}
    return {**final, **timing}
