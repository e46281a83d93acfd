"""ONNX export of a trained checkpoint, with metadata for standalone inference and a parity
check against PyTorch that must pass before the file is written."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import bitmoji_ml
from bitmoji_ml import paths
from bitmoji_ml.checkpoints import model_from_checkpoint, read_checkpoint
from bitmoji_ml.data.cache import load_list
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.data.labels import CLASS_NAMES, predicted_classes
from bitmoji_ml.data.lists import LIST_FILES
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import check_writable, write_files_atomic
from bitmoji_ml.inference import (
    INPUT_NAME,
    LOGITS_OUTPUT,
    META_CLASS_NAMES,
    META_LABEL_MAPPING,
    META_PREPROCESS,
    PROB_OUTPUT,
    OnnxModel,
)
from bitmoji_ml.models.normalize import Classifier
from bitmoji_ml.quantize import quantize_beside
from bitmoji_ml.report import format_table

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


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set metadata_props on the ONNX file at `path` and run the full checker."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "bitmoji-ml"
    model.doc_string = "Bitmoji face gender classifier (Kaggle labels: 1 male, -1 female)"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def compare(model: Classifier, onnx_model: OnnxModel, images: np.ndarray, name: str) -> dict[str, Any]:
    """PyTorch vs onnxruntime on `images`: max |Δ prob| and class agreement."""
    with torch.no_grad():
        reference = torch.cat(
            [ExportWrapper(model)(torch.from_numpy(images[i : i + 64]))[0] for i in range(0, len(images), 64)]
        ).numpy()
    exported = onnx_model.predict_batched(images)
    delta = float(np.abs(reference - exported).max())
    agree = int((predicted_classes(reference) == predicted_classes(exported)).sum())
    return {"case": name, "images": len(images), "max_abs_diff_prob": delta, "same_class": agree}


def parity_report(model: Classifier, onnx_model: OnnxModel, val_images: np.ndarray | None) -> dict[str, Any]:
    """The parity cases: validation images (when available) and random batches of 1, 7, 64."""
    rng = np.random.default_rng(0)
    size = onnx_model.preprocess.size
    cases = []
    if val_images is not None:
        cases.append(compare(model, onnx_model, val_images, "validation images"))
    for batch in RANDOM_BATCHES:
        images = rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)
        cases.append(compare(model, onnx_model, images, f"random uint8 batch {batch}"))
    passed = all(c["max_abs_diff_prob"] <= TOLERANCE and c["same_class"] == c["images"] for c in cases)
    return {"tolerance": TOLERANCE, "passed": passed, "cases": cases}


def parity_table(report: dict[str, Any]) -> str:
    """The parity report as a short table."""
    rows = [
        [c["case"], c["images"], f"{c['max_abs_diff_prob']:.2e}", f"{c['same_class']}/{c['images']}"]
        for c in report["cases"]
    ]
    verdict = "PASS" if report["passed"] else "FAIL"
    table = format_table(["parity case", "images", "max |Δ prob|", "same class"], rows)
    return f"{table}\nparity {verdict} (tolerance {report['tolerance']:.0e})"


def validation_set(lists_dir: Path | None, preprocess: Preprocess) -> tuple[np.ndarray, np.ndarray] | None:
    """Decoded validation images and labels from `prepare`'s val list, if there is one."""
    if lists_dir is None or not (Path(lists_dir) / LIST_FILES["val"]).is_file():
        return None
    images, labels, _ = load_list(Path(lists_dir) / LIST_FILES["val"], preprocess)
    return images, labels


def load_source(
    checkpoint: Path | None, run_id: str | None, experiment: str, download_dir: Path
) -> ExportSource:
    """The checkpoint to export: a file, a run's best, or the experiment's best logged model."""
    if checkpoint is not None:
        payload = read_checkpoint(checkpoint)
        return ExportSource(payload, payload.get("mlflow_run_id"), f"checkpoint {checkpoint}")
    from bitmoji_ml import tracking

    if run_id is not None:
        path = tracking.download_run_checkpoint(run_id, "best.pt", download_dir)
        return ExportSource(read_checkpoint(path), run_id, f"run {run_id} best checkpoint")
    best = tracking.best_logged_checkpoint(experiment, download_dir)
    return ExportSource(read_checkpoint(best.path), best.run_id, f"best logged model {best.model_id}")


def export_job(
    output: Path,
    checkpoint: Path | None = None,
    run_id: str | None = None,
    experiment: str = paths.EXPERIMENT,
    lists_dir: Path | None = None,
    quantize: str | None = None,
    register: bool = True,
    echo=print,
) -> dict[str, Any]:
    """`bitmoji export-onnx`: export, check parity, write atomically, log and register."""
    if quantize not in (None, "int8"):
        raise BitmojiError(f"--quantize supports only int8, got {quantize!r}")
    torch.set_num_threads(os.cpu_count() or 1)
    check_writable(output)
    with tempfile.TemporaryDirectory(prefix="bitmoji-export-") as folder:
        work = Path(folder)
        source = load_source(checkpoint, run_id, experiment, work)
        model, preprocess = model_from_checkpoint(source.payload)
        echo(
            f"exporting {source.payload['model']} (epoch {source.payload.get('epoch')}, "
            f"val acc {source.payload.get('metrics', {}).get('val_acc', float('nan')):.2%}) from {source.description}"
        )
        exported = work / "model.onnx"
        export_graph(model, preprocess, exported)
        write_metadata(exported, metadata_for(source, preprocess, {}))
        onnx_model = OnnxModel.load(exported)
        validation = validation_set(lists_dir, preprocess)
        if validation is None:
            echo(f"note: no validation list in {lists_dir}; parity runs on random batches only")
        report = parity_report(model, onnx_model, None if validation is None else validation[0])
        echo(parity_table(report))
        if not report["passed"]:
            worst = max(report["cases"], key=lambda c: c["max_abs_diff_prob"])
            raise BitmojiError(
                f"parity failed: max |Δ prob| {worst['max_abs_diff_prob']:.2e} on {worst['case']} "
                f"(tolerance {TOLERANCE:.0e}); {output} was not written"
            )
        report_path = output.with_suffix(".parity.json")
        # The model and its parity report are renamed into place together.
        write_files_atomic(
            {output: exported.read_bytes(), report_path: (json.dumps(report, indent=2) + "\n").encode()}
        )
        result: dict[str, Any] = {
            "output": str(output),
            "bytes": output.stat().st_size,
            "report": report,
            "run_id": source.run_id,
        }
        echo(f"wrote {output} ({result['bytes'] / 1024:.0f} KiB) and {report_path}")

        champion = output
        if quantize == "int8":
            int8 = quantize_beside(fp32_path=output, lists_dir=lists_dir, validation=validation)
            result["int8"], champion = int8.summary(), int8.champion

        if register and source.run_id:
            from bitmoji_ml import tracking

            if checkpoint is not None and not tracking.run_exists(source.run_id):
                echo(f"not registered: run {source.run_id} of that checkpoint is not in this store")
                return result

            version = tracking.log_export(source.run_id, output, report_path, champion)
            result["registered_version"] = version
            echo(
                f"logged to run {source.run_id}; registered {paths.REGISTERED_MODEL} v{version} as @champion"
            )
        elif register:
            echo("not registered: the checkpoint names no MLflow run")
    return result
