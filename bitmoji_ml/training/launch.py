"""`bitmoji train --nproc N`: the same training as N torchrun workers on this machine.

Before any worker starts, the launcher checks what a person can get wrong (the config, the
split of the global batch over the processes, the lists, the MLflow store, the run to resume),
so a mistake is one message rather than N. Then it runs

    python -m torch.distributed.run --standalone --nproc-per-node N -m cli train --config FILE ...

where FILE is the recipe this command resolved (so every worker trains exactly that recipe and
nothing is parsed twice), in a process group of its own (`serving.run_in_foreground`: Ctrl-C, SIGTERM or SIGHUP stop
every worker). Rank 0 creates or continues the MLflow run and writes its id to a file named in
$BITMOJI_RUN_ID_FILE. When the workers fail, torchrun stops them all; the launcher then makes
sure the run does not stay RUNNING (a rank 0 killed outright cannot end it) and says how to
resume it. No torch import here: the workers import it.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bitmoji_ml.data.lists import read_manifest
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.recipe import ResolvedRecipe, recipe_toml
from bitmoji_ml.serving import processes as serving

if TYPE_CHECKING:
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)

RUN_ID_FILE_ENV = "BITMOJI_RUN_ID_FILE"
WORKER_MODULE = "cli"  # `python -m cli train ...`: the entry point of `bitmoji`


def per_rank_batch_size(batch_size: int, world_size: int) -> int:
    """Images per process and step: the global batch split evenly over the processes."""
    if batch_size % world_size:
        raise BitmojiError(
            f"batch_size {batch_size} does not split evenly over {world_size} processes: pick a "
            f"multiple of {world_size} (batch_size is the global batch, images per step over all processes)"
        )
    return batch_size // world_size


def torchrun_command(*, nproc: int, arguments: list[str]) -> list[str]:
    """torchrun (as `python -m torch.distributed.run`, whatever PATH holds) on this machine,
    running `cli train` with `arguments` in each of `nproc` workers."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        WORKER_MODULE,
        "train",
        *arguments,
    ]


def worker_environment(*, nproc: int, run_id_file: Path, entry_folder: Path) -> dict[str, str]:
    """This environment, plus where rank 0 writes the run id, the cores shared out (torchrun
    would set one OpenMP thread per worker and warn), and `entry_folder` first on PYTHONPATH so
    that the workers run the same cli.py as this process."""
    environment = dict(os.environ)
    environment[RUN_ID_FILE_ENV] = str(run_id_file)
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    python_path = [str(entry_folder), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(part for part in python_path if part)
    return environment


def worker_arguments(
    *, recipe_file: Path, lists_dir: Path, experiment: str, run_name: str | None, resume_run_id: str | None
) -> list[str]:
    """What each worker's `cli train` is told: the recipe file and the command's own options."""
    arguments = ["--config", str(recipe_file), "--lists", str(lists_dir), "--experiment", experiment]
    if run_name:
        arguments += ["--run-name", run_name]
    if resume_run_id:
        arguments += ["--resume", "--run-id", resume_run_id]
    return arguments


def workers_recipe(recipe: ResolvedRecipe, *, resume: bool) -> str:
    """The recipe file the workers read: the whole resolved recipe for a new run; for --resume,
    only the settings that were asked for, since the checkpoint decides the others."""
    values = recipe.given_values() if resume else recipe.recipe.values()
    return recipe_toml(values, ["resolved by `bitmoji train --nproc` for its torchrun workers"])


def launch_training(
    *,
    nproc: int,
    recipe: ResolvedRecipe,
    lists_dir: Path,
    experiment: str,
    run_name: str | None,
    resume_run_id: str | None,
    entry_folder: Path,
) -> None:
    """Train `recipe` with `nproc` torchrun workers; raise a BitmojiError that names the run and
    how to resume it if they fail or are stopped."""
    store = preflight(nproc=nproc, recipe=recipe, lists_dir=lists_dir, resume_run_id=resume_run_id)
    with tempfile.TemporaryDirectory(prefix="bitmoji-torchrun-") as folder:
        recipe_file = Path(folder) / "recipe.toml"
        recipe_file.write_text(workers_recipe(recipe, resume=resume_run_id is not None), encoding="utf-8")
        arguments = worker_arguments(
            recipe_file=recipe_file,
            lists_dir=lists_dir,
            experiment=experiment,
            run_name=run_name,
            resume_run_id=resume_run_id,
        )
        command = torchrun_command(nproc=nproc, arguments=arguments)
        logger.info("training with %d processes: %s", nproc, shlex.join(command))
        run_id_file = Path(folder) / "run_id"
        environment = worker_environment(nproc=nproc, run_id_file=run_id_file, entry_folder=entry_folder)
        ended = serving.run_in_foreground(command, env=environment)
        run_id = run_id_file.read_text().strip() if run_id_file.is_file() else ""
    if ended.code == 0 and ended.stopped_by is None:
        return
    raise failure(store, ended=ended, run_id=run_id, resume_run_id=resume_run_id, nproc=nproc)


def preflight(*, nproc: int, recipe: ResolvedRecipe, lists_dir: Path, resume_run_id: str | None) -> Store:
    """Refuse what would fail in every worker; return the MLflow store, checked to be usable."""
    from bitmoji_ml.tracking.store import Store

    if nproc < 1:
        raise BitmojiError(f"--nproc must be at least 1, got {nproc}")
    if "WORLD_SIZE" in os.environ:
        raise BitmojiError("--nproc starts torchrun itself: under torchrun, leave --nproc out")
    read_manifest(lists_dir)
    store = Store.open()
    batch_size = recipe.recipe.batch_size
    if resume_run_id:  # the run's batch size: --resume keeps it
        params = store.get_run(resume_run_id).data.params
        batch_size = int(params.get("batch_size", batch_size))
    per_rank_batch_size(batch_size, nproc)
    return store


def failure(
    store: Store,
    *,
    ended: serving.ServerExit,
    run_id: str,
    resume_run_id: str | None,
    nproc: int,
) -> BitmojiError:
    """What to tell a person when the workers did not all finish; ends the run if still RUNNING."""
    from bitmoji_ml.tracking.runs import end_run_if_running

    if ended.stopped_by:
        cause, status = f"training was stopped by {ended.stopped_by}", "KILLED"
    else:
        cause = f"a training process failed (torchrun exit code {ended.code}: the messages above say which and why)"
        status = "FAILED"
    if not run_id:
        untouched = f"run {resume_run_id} was not changed" if resume_run_id else "no MLflow run was started"
        return BitmojiError(f"{cause}; {untouched}")
    status = end_run_if_running(store, run_id=run_id, status=status)
    return BitmojiError(
        f"{cause}. Run {run_id} ended as {status}; continue it from its last checkpoint "
        f"with `bitmoji train --resume --run-id {run_id} --nproc {nproc}`"
    )
