"""PyTorch vs onnxruntime on the validation images and random batches: the parity report that
must pass before an exported file is written, and is written beside it as `*.parity.json`.
Every class's probability is compared, and the predicted class (`predicted_indices`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bitmoji_ml.console import track
from bitmoji_ml.data.cache import load_list
from bitmoji_ml.data.classes import predicted_indices
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.data.lists import LIST_FILES
from bitmoji_ml.models.normalize import Classifier
from bitmoji_ml.report import format_table
from bitmoji_ml.serving.onnx_model import OnnxModel
from bitmoji_ml.training.evaluate import predict_probabilities

TOLERANCE = 1e-5
RANDOM_BATCHES = (1, 7, 64)


@dataclasses.dataclass
class ParityCase:
    """PyTorch vs onnxruntime on one set of images."""

    case: str
    images: int
    max_abs_diff_prob: float  # over every class's probability
    same_class: int
    # (class PyTorch predicts, its P by PyTorch, its P by onnxruntime) of up to three images
    # whose class differs
    class_flips: list[tuple[str, float, float]] = dataclasses.field(default_factory=list)

    def failures(self, tolerance: float) -> list[str]:
        """Which check failed on this case, with its numbers (empty when both passed)."""
        found = []
        if self.max_abs_diff_prob > tolerance:
            found.append(
                f"prob tolerance on {self.case}: max |Δ prob| {self.max_abs_diff_prob:.2e} > {tolerance:.0e}"
            )
        if self.same_class != self.images:
            flips = ", ".join(
                f"P({name}) PyTorch vs onnxruntime {torch_p:.6f} vs {onnx_p:.6f}"
                for name, torch_p, onnx_p in self.class_flips
            )
            within = " (within tolerance)" if self.max_abs_diff_prob <= tolerance else ""
            found.append(
                f"class agreement on {self.case}: {self.images - self.same_class} of {self.images} "
                f"image(s) change class, {flips}; max |Δ prob| {self.max_abs_diff_prob:.2e}{within}"
            )
        return found


@dataclasses.dataclass
class ParityReport:
    """Every parity case and the tolerance they were held to; written as `*.parity.json`."""

    tolerance: float
    cases: list[ParityCase]

    @property
    def failures(self) -> list[str]:
        return [failure for case in self.cases for failure in case.failures(self.tolerance)]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "tolerance": self.tolerance,
            "passed": self.passed,
            "cases": [dataclasses.asdict(case) for case in self.cases],
        }


def compare(model: Classifier, onnx_model: OnnxModel, images: np.ndarray, name: str) -> ParityCase:
    """PyTorch vs onnxruntime on `images`: max |Δ prob| over every class and class agreement."""
    reference = predict_probabilities(model, images, torch.device("cpu"))
    exported = onnx_model.predict_batched(images)
    if reference.shape != exported.shape:
        return ParityCase(name, len(images), float("inf"), 0)  # e.g. a graph of other classes
    delta = float(np.abs(reference - exported).max())
    torch_class = predicted_indices(reference)
    differ = np.nonzero(torch_class != predicted_indices(exported))[0]
    names = onnx_model.classes.names
    flips = [
        (names[torch_class[i]], float(reference[i, torch_class[i]]), float(exported[i, torch_class[i]]))
        for i in differ[:3]
    ]
    return ParityCase(name, len(images), delta, len(images) - len(differ), flips)


def parity_report(model: Classifier, onnx_model: OnnxModel, val_images: np.ndarray | None) -> ParityReport:
    """The parity cases: validation images (when available) and random batches of 1, 7, 64."""
    rng = np.random.default_rng(0)
    size = onnx_model.preprocess.size
    inputs = [] if val_images is None else [("validation images", val_images)]
    for batch in RANDOM_BATCHES:
        images = rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)
        inputs.append((f"random uint8 batch {batch}", images))
    cases = [compare(model, onnx_model, images, name) for name, images in track(inputs, "parity check")]
    return ParityReport(TOLERANCE, cases)


def parity_table(report: ParityReport) -> str:
    """The parity report as a short table."""
    rows = [
        [c.case, c.images, f"{c.max_abs_diff_prob:.2e}", f"{c.same_class}/{c.images}"] for c in report.cases
    ]
    verdict = "PASS" if report.passed else "FAIL"
    table = format_table(["parity case", "images", "max |Δ prob|", "same class"], rows)
    return f"{table}\nparity {verdict} (tolerance {report.tolerance:.0e})"


def validation_set(lists_dir: Path | None, preprocess: Preprocess) -> tuple[np.ndarray, np.ndarray] | None:
    """Decoded validation images and labels from `prepare`'s val list, if there is one."""
    if lists_dir is None or not (Path(lists_dir) / LIST_FILES["val"]).is_file():
        return None
    images, labels, _ = load_list(Path(lists_dir) / LIST_FILES["val"], preprocess)
    return images, labels
