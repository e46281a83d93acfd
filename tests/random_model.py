"""A network saved as a checkpoint and exported to ONNX without MLflow, for tests that need a
real model file but not a trained one (speed, decoders, quantization do not need the weights)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from bitmoji_ml.checkpoints import save_checkpoint
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.export.job import export_job
from bitmoji_ml.models import DEFAULT_MODEL, model_spec


def export_network(
    folder: Path, network: nn.Module, *, name: str = "model", preprocess: Preprocess | None = None
) -> tuple[Path, Path]:
    """(`name`.pt, `name`.onnx) in `folder`: `network` as a DEFAULT_MODEL checkpoint with
    `preprocess` (default: the model's own), exported by export_job."""
    preprocess = preprocess or model_spec(DEFAULT_MODEL).preprocess
    checkpoint = folder / f"{name}.pt"
    fields = {"model": DEFAULT_MODEL, "preprocess": preprocess.to_dict(), "epoch": 0, "metrics": {}}
    save_checkpoint(checkpoint, network, config={}, **fields)
    output = folder / f"{name}.onnx"
    export_job(output=output, checkpoint=checkpoint, register=False, lists_dir=None)
    return checkpoint, output
