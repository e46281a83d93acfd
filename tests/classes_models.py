"""Model files for the N-class export and serving tests, made without MLflow: a random network of
three classes (a, b, c) exported the way `export-onnx` does, and a Bitmoji file exported the
round-1 way (one `prob_male` output, its old metadata), which must still load and predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bitmoji_ml.checkpoints import save_checkpoint
from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.export.graph import OPSET, write_metadata
from bitmoji_ml.export.job import export_job
from bitmoji_ml.models import create_model
from bitmoji_ml.models.normalize import Classifier
from bitmoji_ml.serving.onnx_model import META_PREPROCESS

THREE = Classes(("a", "b", "c"))
PREPROCESS = Preprocess(size=32, resize=32)


def noise_images(count: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """`count` uint8 NHWC images: a random colour per image plus noise, so networks disagree."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(count, 1, 1, 3))
    return np.clip(base + rng.normal(0, 30, size=(count, size, size, 3)), 0, 255).astype(np.uint8)


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` PNG files of `noise_images` in `folder`; returns their paths, sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, pixels in enumerate(noise_images(count, seed)):
        path = folder / f"{index:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def spread_network(classes: Classes, seed: int = 0) -> Classifier:
    """A seeded random compact network of len(classes) outputs, its last layer sharpened and
    its biases centred on noise images so that every class gets predicted."""
    torch.manual_seed(seed)
    model = create_model("compact", PREPROCESS, num_classes=len(classes)).eval()
    last = model.net[-1]
    with torch.no_grad():
        last.weight.mul_(50)
        logits = model(torch.from_numpy(noise_images(64, seed + 1)))
        last.bias.sub_(logits.median(dim=0).values)
    return model


def save_model_checkpoint(path: Path, network: Classifier, classes: Classes | None) -> Path:
    """`network` as a compact checkpoint; `classes` None writes none (a round-1 checkpoint)."""
    fields = {"model": "compact", "preprocess": PREPROCESS.to_dict(), "epoch": 0, "metrics": {}}
    if classes is not None:
        fields["classes"] = classes.to_dict()
    save_checkpoint(path, network, config={"model": "compact"}, **fields)
    return path


def export_classes_model(folder: Path, classes: Classes = THREE, seed: int = 0) -> tuple[Path, Classifier]:
    """(the exported ONNX file, the PyTorch network) of a random `classes` model; parity checked
    by export_job."""
    network = spread_network(classes, seed)
    checkpoint = save_model_checkpoint(folder / f"{'-'.join(classes.names)}.pt", network, classes)
    output = folder / f"{'-'.join(classes.names)}.onnx"
    export_job(output=output, checkpoint=checkpoint, register=False, lists_dir=None)
    return output, network


class Round1Wrapper(torch.nn.Module):
    """The graph as round 1 shipped it: uint8 NHWC -> (P(male) [batch], logits [batch, 2])."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(images)
        return torch.softmax(logits, dim=1)[:, 1], logits


def export_round1(path: Path, network: Classifier) -> Path:
    """A Bitmoji file exported before N classes: outputs `prob_male` and `logits`, and round 1's
    metadata (class names female, male and the Kaggle mapping)."""
    example = torch.zeros(2, PREPROCESS.size, PREPROCESS.size, 3, dtype=torch.uint8)
    program = torch.onnx.export(
        Round1Wrapper(network.eval()).eval(),
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=["prob_male", "logits"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=1 << 20)}},
        opset_version=OPSET,
        external_data=False,
        verbose=False,
    )
    program.save(str(path), external_data=False)
    metadata = {
        META_PREPROCESS: json.dumps(PREPROCESS.to_dict()),
        "outputs": "prob_male: P(male) [batch]; logits: [batch, 2] (female, male)",
        "class_names": json.dumps(["female", "male"]),
        "kaggle_label_mapping": json.dumps({"male": 1, "female": -1}),
        "model_name": "compact",
    }
    write_metadata(path, metadata, full_check=False)
    return path
