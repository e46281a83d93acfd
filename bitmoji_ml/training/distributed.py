"""Data-parallel training under torchrun: one process (rank) per CPU share or GPU, gradients
synchronised by DistributedDataParallel, gloo on CPU and NCCL on CUDA. `bitmoji train --nproc N`
starts torchrun (`training/launch.py`); a user's own `torchrun ... -m cli train` runs the same
code. In a single process every function here is a no-op or plain call, so one loop serves both.

What the ranks agree on, and how:
- Data and random numbers: `sharding.py` (each rank's shard of a permutation seeded by (seed,
  epoch), in batches of `batch_size / world size`: `batch_size` stays the global batch, so the
  same recipe gives the same schedule on any number of processes; generators seeded by (seed,
  epoch, rank)).
- BatchNorm: each rank normalises with its own batch's statistics (SyncBatchNorm does not run
  on CPU; `sync_batchnorm` turns it on for CUDA). After every step the running statistics are
  averaged over the ranks, so weights, buffers and the weight average (EMA, which averages
  buffers too) are identical on every rank.
- Rank 0 alone talks to MLflow, validates, writes checkpoints and plots; what it decides
  (metrics, best epoch, early stop) and any error it meets are broadcast, so no rank waits on a
  peer that has stopped. A process-group timeout turns a stuck peer into an error, and SIGTERM
  (torchrun stopping the others after a worker died) ends the run as KILLED once any checkpoint
  being written is complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bitmoji_ml.console import progress
from bitmoji_ml.errors import BitmojiError, ReportedElsewhere
from bitmoji_ml.files import write_text_atomic
from bitmoji_ml.training.launch import RUN_ID_FILE_ENV
from bitmoji_ml.training.termination import on_sigterm, sigterm_ends_run

Value = TypeVar("Value")
TIMEOUT_ENV = "BITMOJI_PROCESS_GROUP_TIMEOUT"
# The longest a rank waits for its peers: while rank 0 validates and logs an epoch, the others
# wait at the next collective, so this must exceed a validation pass plus MLflow logging.
DEFAULT_TIMEOUT_SECONDS = 600
PACKAGE_LOGGER = "bitmoji_ml"


# --------------------------------------------------------------------------------------------
# Who we are


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """How many processes train together (1 in a single process)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that validates, checkpoints and talks to MLflow."""
    return rank() == 0


def local_world_size() -> int:
    """Processes on this machine: torchrun's LOCAL_WORLD_SIZE, 1 outside torchrun."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def threads_per_process() -> int:
    """Intra-op threads when none are asked for: this machine's cores shared by its processes
    (more threads than cores only contend)."""
    return max(1, (os.cpu_count() or 1) // local_world_size())


def local_device(device_type: str) -> torch.device:
    """The device this process trains on: its own GPU (LOCAL_RANK) under torchrun."""
    if device_type == "cuda" and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device_type)


def run_params(batch_size: int) -> dict[str, str]:
    """How the run is spread, for its MLflow params: the number of processes and, with several,
    each one's share of the global batch (`batch_size`); alone it would only repeat batch_size
    (and show as a differing param in `bitmoji runs`)."""
    params = {"world_size": str(world_size())}
    if world_size() > 1:
        params["batch_size_per_rank"] = str(batch_size // world_size())
    return params


def rank_error(message: str) -> BitmojiError:
    """An error every rank meets alike: rank 0 reports it, the others exit quietly."""
    return BitmojiError(message) if is_main() else ReportedElsewhere(message)


# --------------------------------------------------------------------------------------------
# The process group


@contextlib.contextmanager
def process_group(device_type: str) -> Iterator[None]:
    """Join the process group torchrun announced (WORLD_SIZE > 1): NCCL for CUDA, gloo for CPU,
    with a timeout; quiet logging on ranks other than 0; SIGTERM ends the run cleanly. Leaves
    the group after the block. Nothing happens in a single process, or when the caller has
    already set up a group."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or dist.is_initialized():
        with sigterm_ends_run():
            yield
        return
    backend = _backend(device_type)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=process_group_timeout())
    previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
    package_logger = logging.getLogger(PACKAGE_LOGGER)
    previous_level = package_logger.level
    if not is_main():  # rank 0 speaks for the job; the others only warn
        package_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        package_logger.setLevel(previous_level)
    # Only after success: after a failure the process exits, and a group with a dead peer may
    # not tear down cleanly.
    dist.destroy_process_group()


def _backend(device_type: str) -> str:
    if device_type == "cpu":
        return "gloo"
    if device_type != "cuda":
        raise BitmojiError(f"training on several processes needs --device cpu or cuda, not {device_type}")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise BitmojiError(
            f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
            "start at most that many processes per machine"
        )
    return "nccl"


def process_group_timeout() -> datetime.timedelta:
    """How long a collective waits for a peer before failing ($BITMOJI_PROCESS_GROUP_TIMEOUT
    seconds, default 600), so that a stuck rank ends the job instead of hanging it."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_SECONDS
    except ValueError as error:
        raise BitmojiError(f"${TIMEOUT_ENV} must be a number of seconds, got {text!r}") from error
    return datetime.timedelta(seconds=seconds)


def report_run_id(run_id: str) -> None:
    """Tell `bitmoji train --nproc` which MLflow run the workers train (a file it named), so that
    it can end the run and say how to resume it if the workers die."""
    path = os.environ.get(RUN_ID_FILE_ENV)
    if path and run_id:
        write_text_atomic(path, run_id)


def progress_on_main(description: str, total: int) -> contextlib.AbstractContextManager:
    """A progress bar on rank 0; the other ranks draw none (their bars would interleave)."""
    if is_main():
        return progress(description, total)
    return contextlib.nullcontext(lambda advance=1, **fields: None)


# --------------------------------------------------------------------------------------------
# The model: DDP wrapper, BatchNorm statistics, metric sums


def data_parallel(model: nn.Module, *, sync_batchnorm: bool) -> DistributedDataParallel | None:
    """The DistributedDataParallel wrapper that training steps call (None in a single process).
    Buffers are not broadcast from rank 0 at each forward: `average_batchnorm_statistics` keeps
    them equal instead. `sync_batchnorm` converts BatchNorm to SyncBatchNorm in place (CUDA)."""
    if not dist.is_initialized():
        return None
    device = next(model.parameters()).device
    if sync_batchnorm:
        if device.type != "cuda":
            raise rank_error("sync_batchnorm needs CUDA: SyncBatchNorm does not run on CPU")
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        assert converted is model  # the classifier is not itself a BatchNorm: children replaced
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)


def _batchnorm_statistics(model: nn.Module) -> list[torch.Tensor]:
    return [
        buffer
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for buffer in (module.running_mean, module.running_var)
        if buffer is not None
    ]


@torch.no_grad()
def average_batchnorm_statistics(model: nn.Module) -> None:
    """Replace every rank's BatchNorm running mean and variance by their mean over the ranks
    (one small all-reduce per step). Each rank updated them from its own batch; averaged, they
    are the running statistics of the global batch's per-rank statistics, and identical on
    every rank, as the weight average needs. Nothing happens in a single process."""
    statistics = _batchnorm_statistics(model) if dist.is_initialized() else []
    if not statistics:
        return
    flat = torch.cat([buffer.reshape(-1) for buffer in statistics])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for buffer, part in zip(statistics, flat.split([buffer.numel() for buffer in statistics]), strict=True):
        buffer.copy_(part.view_as(buffer))


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Each value summed over the ranks (the values unchanged in a single process)."""
    if not dist.is_initialized():
        return list(values)
    totals = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return totals.tolist()


# --------------------------------------------------------------------------------------------
# Rank 0 decides, the others follow


@dataclasses.dataclass
class _MainFailed:
    message: str


def share_from_main(produce: Callable[[], Value]) -> Value:
    """`produce()` run on rank 0 and its (picklable) value sent to every rank; in a single
    process, just `produce()`. If it raises on rank 0, every other rank raises
    ReportedElsewhere (rank 0 reports the error) instead of waiting for a value."""
    return _from_main(produce, share=True)


def run_on_main(produce: Callable[[], Value]) -> Value | None:
    """`produce()` run on rank 0 only (None on the others), which wait for it to succeed; an
    error there stops every rank as in `share_from_main`."""
    return _from_main(produce, share=False)


def _from_main(produce: Callable[[], Value], *, share: bool) -> Value | None:
    if not dist.is_initialized():
        return produce()
    if is_main():
        try:
            value = produce()
        except BaseException as error:
            with contextlib.suppress(Exception):  # the peers may be gone already
                _broadcast(_MainFailed(_describe(error)))
            raise
        _broadcast(value if share else None)
        return value
    received = _broadcast(None)
    if isinstance(received, _MainFailed):
        raise ReportedElsewhere(f"rank 0 stopped: {received.message}")
    return received


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _broadcast(value: Any) -> Any:
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class NullRun:
    """The tracker of ranks other than 0: it logs nothing (rank 0 alone talks to MLflow)."""

    run_id = ""
    run_name = ""

    def __enter__(self) -> NullRun:
        return self

    def __exit__(self, *exception: object) -> None:
        return None

    def log_start(self, **_: Any) -> None: ...
    def log_resume(self, **_: Any) -> None: ...
    def log_summary(self, metrics: dict[str, float]) -> None: ...
    def log_epoch(self, **_: Any) -> str:
        return ""

    def log_checkpoint(self, path: Any) -> str:
        return ""

    def log_plots(self, history: Any, **_: Any) -> None: ...
