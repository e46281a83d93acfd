"""The graph we ship (uint8 NHWC images in, the probability of each class and the logits out)
and the string metadata that makes it usable without this project: preprocessing, class names,
provenance and versions."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import onnx
import torch

import bitmoji_ml
from bitmoji_ml.checkpoints import checkpoint_classes
from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.models.normalize import Classifier
from bitmoji_ml.serving.onnx_model import INPUT_NAME, LOGITS_OUTPUT, META_PREPROCESS, PROB_OUTPUT

OPSET = 20


class ExportWrapper(torch.nn.Module):
    """The graph we ship: uint8 NHWC images -> (probabilities [batch, N], logits [batch, N])."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(images)
        return torch.softmax(logits, dim=1), logits


def load_exporter() -> None:
    """Import what the exporter's first call would (torch.export with the compiler stack, and
    onnxscript: about two seconds), at a moment of the caller's choosing, e.g. while the MLflow
    process looks for the checkpoint."""
    import onnxscript  # noqa: F401
    import torch.export  # noqa: F401


def export_graph(model: Classifier, preprocess: Preprocess, path: Path) -> None:
    """Export with the dynamo exporter: dynamic batch, opset 20, one self-contained file."""
    wrapper = ExportWrapper(model.eval()).eval()
    example = torch.zeros(2, preprocess.size, preprocess.size, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.onnx.export(
        wrapper,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[PROB_OUTPUT, LOGITS_OUTPUT],
        dynamic_shapes={"images": {0: batch}},
        opset_version=OPSET,
        external_data=False,
        verbose=False,
    )
    program.save(str(path), external_data=False)


def metadata_for(payload: dict[str, Any], run_id: str | None, preprocess: Preprocess) -> dict[str, str]:
    """Everything inference needs, and where the model came from (checkpoint `payload` of run
    `run_id`), as string metadata."""
    import onnxruntime

    metrics = payload.get("metrics", {})
    classes = checkpoint_classes(payload)  # none recorded: Bitmoji's
    return {
        META_PREPROCESS: json.dumps(preprocess.to_dict()),
        "input_size": str(preprocess.size),
        "resize_filter": preprocess.filter,
        "input_layout": "NHWC uint8 RGB, normalisation inside the graph",
        "outputs": outputs_text(classes),
        **classes.to_metadata(),
        "model_name": str(payload["model"]),
        "mlflow_run_id": run_id or "",
        "checkpoint_step": str(payload.get("epoch", "")),
        "val_acc": f"{metrics.get('val_acc', float('nan')):.6f}",
        "data_digest": str(payload.get("data_digest", "")),
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": json.dumps(
            {
                "bitmoji_ml": bitmoji_ml.__version__,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
                "opset": OPSET,
            }
        ),
    }


def outputs_text(classes: Classes) -> str:
    """What the outputs hold, in words, for the "outputs" metadata entry."""
    names = ", ".join(classes.names)
    return (
        f"{PROB_OUTPUT}: [batch, {len(classes)}] softmax, column i = P(class_names[i]) ({names}); "
        f"{LOGITS_OUTPUT}: [batch, {len(classes)}] ({names})"
    )


def doc_string(classes: Classes) -> str:
    """The model's ONNX doc_string: Bitmoji's own, else the classes it tells apart."""
    if classes.kaggle:
        return "Bitmoji face gender classifier (Kaggle labels: 1 male, -1 female)"
    return f"image classifier, {len(classes)} classes: {', '.join(classes.names)}"


def replace_metadata_props(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Make `metadata` the model's whole metadata_props."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def write_metadata(path: Path, metadata: dict[str, str], *, full_check: bool = True) -> None:
    """Make `metadata` the metadata_props of the ONNX file at `path`. With `full_check` (the
    fp32 export), also stamp the producer and run onnx's full checker on the result."""
    model = onnx.load(str(path))
    replace_metadata_props(model, metadata)
    if full_check:
        model.producer_name = "bitmoji-ml"
        model.doc_string = doc_string(Classes.from_metadata(metadata))
        onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
