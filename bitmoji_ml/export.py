"""ONNX export of a trained checkpoint, with metadata for standalone inference and a parity
check against PyTorch that must pass before the file is written."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch

import bitmoji_ml
from bitmoji_ml import paths
from bitmoji_ml.checkpoints import model_from_checkpoint, read_checkpoint
from bitmoji_ml.console import track
from bitmoji_ml.data.cache import load_list
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.data.labels import CLASS_NAMES, predicted_classes
from bitmoji_ml.data.lists import LIST_FILES, read_list
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import check_writable, write_files_atomic
from bitmoji_ml.models.normalize import Classifier
from bitmoji_ml.quantize import quantize_beside
from bitmoji_ml.report import format_table
from bitmoji_ml.serving.onnx_model import (
    INPUT_NAME,
    LOGITS_OUTPUT,
    META_CLASS_NAMES,
    META_LABEL_MAPPING,
    META_PREPROCESS,
    PROB_OUTPUT,
    OnnxModel,
)
from bitmoji_ml.training.evaluate import predict_probabilities

if TYPE_CHECKING:
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)

OPSET = 20
TOLERANCE = 1e-5
RANDOM_BATCHES = (1, 7, 64)


class ExportWrapper(torch.nn.Module):
    """The graph we ship: uint8 NHWC images -> (P(male) [batch], logits [batch, 2])."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(images)
        return torch.softmax(logits, dim=1)[:, 1], logits


@dataclasses.dataclass
class ExportSource:
    """The checkpoint being exported and where it came from."""

    payload: dict[str, Any]
    run_id: str | None
    description: str


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


def metadata_for(source: ExportSource, preprocess: Preprocess, extra: dict[str, str]) -> dict[str, str]:
    """Everything inference needs, and where the model came from, as string metadata."""
    import onnxruntime

    payload = source.payload
    metrics = payload.get("metrics", {})
    return {
        META_PREPROCESS: json.dumps(preprocess.to_dict()),
        "input_size": str(preprocess.size),
        "resize_filter": preprocess.filter,
        "input_layout": "NHWC uint8 RGB, normalisation inside the graph",
        "outputs": f"{PROB_OUTPUT}: P(male) [batch]; {LOGITS_OUTPUT}: [batch, 2] (female, male)",
        META_CLASS_NAMES: json.dumps(list(CLASS_NAMES)),
        META_LABEL_MAPPING: json.dumps({"male": 1, "female": -1}),
        "model_name": str(payload["model"]),
        "mlflow_run_id": source.run_id or "",
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
        **extra,
    }


def replace_metadata_props(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Make `metadata` the model's whole metadata_props (the int8 file is written this way too)."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set metadata_props on the ONNX file at `path` and run the full checker."""
    model = onnx.load(str(path))
    replace_metadata_props(model, metadata)
    model.producer_name = "bitmoji-ml"
    model.doc_string = "Bitmoji face gender classifier (Kaggle labels: 1 male, -1 female)"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


@dataclasses.dataclass
class ParityCase:
    """PyTorch vs onnxruntime on one set of images."""

    case: str
    images: int
    max_abs_diff_prob: float
    same_class: int
    # (PyTorch P(male), onnxruntime P(male)) of up to three images whose class differs
    class_flips: list[tuple[float, float]] = dataclasses.field(default_factory=list)

    def failures(self, tolerance: float) -> list[str]:
        """Which check failed on this case, with its numbers (empty when both passed)."""
        found = []
        if self.max_abs_diff_prob > tolerance:
            found.append(
                f"prob tolerance on {self.case}: max |Δ prob| {self.max_abs_diff_prob:.2e} > {tolerance:.0e}"
            )
        if self.same_class != self.images:
            flips = ", ".join(f"{torch_p:.6f} vs {onnx_p:.6f}" for torch_p, onnx_p in self.class_flips)
            within = " (within tolerance)" if self.max_abs_diff_prob <= tolerance else ""
            found.append(
                f"class agreement on {self.case}: {self.images - self.same_class} of {self.images} "
                f"image(s) change class, P(male) PyTorch vs onnxruntime {flips}; "
                f"max |Δ prob| {self.max_abs_diff_prob:.2e}{within}"
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
    """PyTorch vs onnxruntime on `images`: max |Δ prob| and class agreement."""
    reference = predict_probabilities(model, images, torch.device("cpu"))[:, 1]
    exported = onnx_model.predict_batched(images)
    delta = float(np.abs(reference - exported).max())
    differ = np.nonzero(predicted_classes(reference) != predicted_classes(exported))[0]
    flips = [(float(reference[i]), float(exported[i])) for i in differ[:3]]
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


def load_source(
    checkpoint: Path | None,
    run_id: str | None,
    experiment: str,
    download_dir: Path,
    *,
    store: Store | None = None,
    lists_dir: Path | None = None,
) -> ExportSource:
    """The checkpoint to export: a file, a run's best, or the best logged model of the
    experiment among those scored on the validation list in `lists_dir`."""
    if checkpoint is not None:
        payload = read_checkpoint(checkpoint)
        return ExportSource(payload, payload.get("mlflow_run_id"), f"checkpoint {checkpoint}")
    from bitmoji_ml.tracking.names import BEST_CHECKPOINT
    from bitmoji_ml.tracking.registry import best_logged_checkpoint
    from bitmoji_ml.tracking.runs import download_run_checkpoint

    if run_id is not None:
        path = download_run_checkpoint(store, run_id=run_id, name=BEST_CHECKPOINT, folder=download_dir)
        return ExportSource(read_checkpoint(path), run_id, f"run {run_id} best checkpoint")
    best = best_logged_checkpoint(
        store, experiment=experiment, lists_dir=Path(lists_dir or paths.LISTS_DIR), folder=download_dir
    )
    return ExportSource(read_checkpoint(best.path), best.run_id, f"best logged model {best.model_id}")


@dataclasses.dataclass
class ExportResult:
    """What `export_job` wrote and where it logged it."""

    output: Path
    bytes: int
    report: ParityReport
    run_id: str | None
    registered_version: str | None = None
    int8: dict[str, Any] | None = None  # output, val_acc, fp32_val_acc with --quantize int8


def export_job(
    *,
    output: Path,
    checkpoint: Path | None = None,
    run_id: str | None = None,
    experiment: str = paths.EXPERIMENT,
    lists_dir: Path | None = None,
    quantize: str | None = None,
    register: bool = True,
    store: Store | None = None,
) -> ExportResult:
    """`bitmoji export-onnx`: export, check parity, write atomically, log and register."""
    if run_id and checkpoint:
        raise BitmojiError("give --run-id or --checkpoint, not both")
    if quantize not in (None, "int8"):
        raise BitmojiError(f"--quantize supports only int8, got {quantize!r}")
    output = Path(output)
    torch.set_num_threads(os.cpu_count() or 1)
    check_writable(output)
    if store is None and (checkpoint is None or register):
        from bitmoji_ml.tracking.store import Store

        store = Store.open()
    with tempfile.TemporaryDirectory(prefix="bitmoji-export-") as folder:
        work = Path(folder)
        source = load_source(checkpoint, run_id, experiment, work, store=store, lists_dir=lists_dir)
        model, preprocess = model_from_checkpoint(source.payload)
        val_acc = source.payload.get("metrics", {}).get("val_acc")
        logger.info(
            "exporting %s (epoch %s, %s) from %s",
            source.payload["model"],
            source.payload.get("epoch"),
            "no validation" if val_acc is None else f"val acc {val_acc:.2%}",
            source.description,
        )
        exported = work / "model.onnx"
        export_graph(model, preprocess, exported)
        write_metadata(exported, metadata_for(source, preprocess, {}))
        onnx_model = OnnxModel.load(exported)
        validation = validation_set(lists_dir, preprocess)
        if validation is None:
            logger.info("note: no validation list in %s; parity runs on random batches only", lists_dir)
        report = parity_report(model, onnx_model, None if validation is None else validation[0])
        logger.info("%s", parity_table(report))
        if not report.passed:
            raise BitmojiError(f"parity failed: {'; '.join(report.failures)}; {output} was not written")
        report_path = output.with_suffix(".parity.json")
        # The model and its parity report are renamed into place together.
        report_json = json.dumps(report.to_dict(), indent=2) + "\n"
        write_files_atomic({output: exported.read_bytes(), report_path: report_json.encode()})
        result = ExportResult(output, output.stat().st_size, report, source.run_id)
        logger.info("wrote %s (%.0f KiB) and %s", output, result.bytes / 1024, report_path)

        champion = output
        if quantize == "int8":
            int8 = quantize_beside(fp32_path=output, lists_dir=lists_dir, validation=validation)
            result.int8, champion = int8.summary(), int8.champion
        if register:
            result.registered_version = _register(
                store,
                source=source,
                checkpoint=checkpoint,
                output=output,
                report_path=report_path,
                champion=champion,
                example_image=_first_validation_image(lists_dir),
            )
    return result


def _register(
    store: Store,
    *,
    source: ExportSource,
    checkpoint: Path | None,
    output: Path,
    report_path: Path,
    champion: Path,
    example_image: Path | None,
) -> str | None:
    """Log the files to the source run and move @champion; the version, or None if not registered."""
    if not source.run_id:
        logger.info("not registered: the checkpoint names no MLflow run")
        return None
    from bitmoji_ml.tracking.registry import log_export

    if checkpoint is not None and not store.run_exists(source.run_id):
        logger.info("not registered: run %s of that checkpoint is not in this store", source.run_id)
        return None
    version = log_export(
        store,
        run_id=source.run_id,
        onnx_path=output,
        report_path=report_path,
        champion_path=champion,
        example_image=example_image,
    ).version
    logger.info(
        "logged to run %s; registered %s v%s as @champion", source.run_id, paths.REGISTERED_MODEL, version
    )
    return version


def _first_validation_image(lists_dir: Path | None) -> Path | None:
    """The first face of the validation list (the registered model's input example), if any."""
    path = Path(lists_dir or "") / LIST_FILES["val"]
    entries = read_list(path) if lists_dir and path.is_file() else []
    return entries[0][0] if entries else None
