"""From the requested config to the settings a run actually uses on this machine: the input size
(0 = the model's), the device (`auto` = the best available) and the thread count (0 = this
machine's cores, shared out between its torchrun processes); and the CPU settings of a process
that trains (`use_cpu`)."""

from __future__ import annotations

import dataclasses

import torch

from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import model_spec
from bitmoji_ml.recipe import Recipe
from bitmoji_ml.training.distributed import threads_per_process
from bitmoji_ml.training.memory import keep_freed_memory


def preprocess_for(config: Recipe) -> Preprocess:
    """The model's preprocessing, with `image_size` overriding its input size when set."""
    spec = model_spec(config.model).preprocess
    if config.image_size and config.image_size != spec.size:
        ratio = spec.resize / spec.size
        spec = dataclasses.replace(spec, size=config.image_size, resize=round(config.image_size * ratio))
    return spec


def select_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device that is absent is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise BitmojiError(f"--device {name} requested but no {name.upper()} device is available")
    return torch.device(name)


def resolve_config(config: Recipe) -> Recipe:
    """`config` with image_size, device and threads replaced by the values used here, so that
    params, checkpoints and run names say what happened (72, cpu, 16 rather than 0, auto, 0).
    Threads are per process: under torchrun each of a machine's N processes gets cores / N."""
    return config.replace(
        image_size=preprocess_for(config).size,
        device=select_device(config.device).type,
        threads=config.threads or threads_per_process(),
    )


def use_cpu(threads: int) -> None:
    """This process trains with `threads` intra-op threads, and malloc keeps the training step's
    freed buffers for the next step (training/memory.py)."""
    torch.set_num_threads(threads)
    keep_freed_memory()


def default_run_name(config: Recipe) -> str:
    """A run name that says the model and its key settings, e.g. compact-72px-e20-bs64-adamw-lr0.002
    (with `-w0.75` after the model at another width, `-all` at the end on all labelled images)."""
    width = f"-w{config.width:g}" if config.width != 1 else ""
    return (
        f"{config.model}{width}-{preprocess_for(config).size}px-e{config.epochs}-bs{config.batch_size}"
        f"-{config.optimizer}-lr{config.lr:g}{'-all' if config.all_labelled else ''}"
    )
