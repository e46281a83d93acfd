"""`bitmoji export-onnx`: export a checkpoint, prove parity with PyTorch, write the file and its
parity report together, optionally quantise to int8, and register the result."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from bitmoji_ml import paths
from bitmoji_ml.checkpoints import model_from_checkpoint
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.export.graph import export_graph, load_exporter, metadata_for, write_metadata
from bitmoji_ml.export.int8 import Int8Result, int8_paths, quantize_beside
from bitmoji_ml.export.parity import ParityReport, parity_report, validation_set
from bitmoji_ml.export.register import ExportedFiles, RegistrationOutcome
from bitmoji_ml.export.source import ExportSource, first_validation_image, load_source
from bitmoji_ml.files import check_writable, write_files_atomic
from bitmoji_ml.serving.onnx_model import OnnxModel
from bitmoji_ml.tracking.mlflow_process import on_store

if TYPE_CHECKING:
    from bitmoji_ml.tracking.mlflow_process import MlflowProcess
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ExportResult:
    """What `export_job` wrote and what the registry made of it."""

    output: Path
    bytes: int
    report: ParityReport
    run_id: str | None
    registration: RegistrationOutcome | None = None  # None: not registered (--no-register, no run)
    int8: Int8Result | None = None  # with --quantize int8: its report and the champion decision

    @property
    def registered_version(self) -> str | None:
        return self.registration.version if self.registration else None


def _check_arguments(run_id: str | None, checkpoint: Path | None, quantize: str | None) -> None:
    if run_id and checkpoint:
        raise BitmojiError("give --run-id or --checkpoint, not both")
    if quantize not in (None, "int8"):
        raise BitmojiError(f"--quantize supports only int8, got {quantize!r}")


def parity_path(output: Path) -> Path:
    """Where the parity report of the ONNX file `output` goes."""
    return output.with_suffix(".parity.json")


def _export_checked(source: ExportSource, output: Path, work: Path, lists_dir: Path | None):
    """Export the source's checkpoint as `export_checked` does."""
    model, preprocess = model_from_checkpoint(source.payload)
    metadata = metadata_for(source.payload, source.run_id, preprocess)
    return export_checked(model, preprocess, metadata, output=output, work=work, lists_dir=lists_dir)


def export_checked(
    model: torch.nn.Module,
    preprocess: Preprocess,
    metadata: dict[str, str],
    *,
    output: Path,
    work: Path,
    lists_dir: Path | None,
):
    """Export `model` (uint8 images in, two logits out) with `metadata` into `work`, check
    parity and write the file and its parity report into place together; (report, report
    path, validation set)."""
    exported = work / "model.onnx"
    export_graph(model, preprocess, exported)
    write_metadata(exported, metadata)
    validation = validation_set(lists_dir, preprocess)
    if validation is None:
        logger.info("note: no validation list in %s; parity runs on random batches only", lists_dir)
    onnx_model = OnnxModel.load(exported)
    report = parity_report(model, onnx_model, None if validation is None else validation[0])
    if not report.passed:
        raise BitmojiError(f"parity failed: {'; '.join(report.failures)}; {output} was not written")
    report_path = parity_path(output)
    report_json = json.dumps(report.to_dict(), indent=2) + "\n"
    write_files_atomic({output: exported.read_bytes(), report_path: report_json.encode()})
    return report, report_path, validation


def export_job(
    *,
    output: Path,
    checkpoint: Path | None = None,
    run_id: str | None = None,
    experiment: str = paths.EXPERIMENT,
    lists_dir: Path | None = None,
    quantize: str | None = None,
    register: bool = True,
    promote: bool = False,
    store: Store | MlflowProcess | None = None,
) -> ExportResult:
    """`bitmoji export-onnx`: export, check parity, write atomically, log and register as a
    version of the registered model named after `experiment` (moving its `@champion` only to a
    model at least as good as the current one, or with `promote`). Every MLflow call goes to
    `store`: a Store, or an MlflowProcess that makes them in its child (the command)."""
    _check_arguments(run_id, checkpoint, quantize)
    output = Path(output)
    torch.set_num_threads(os.cpu_count() or 1)
    for path in [output, parity_path(output), *(int8_paths(output) if quantize else [])]:
        check_writable(path)  # fail before minutes of work, not after
    if store is None and (checkpoint is None or register):
        from bitmoji_ml.tracking.store import Store

        store = Store.open()
    if checkpoint is None:
        load_exporter()  # while the MLflow process finds and downloads the checkpoint
    with tempfile.TemporaryDirectory(prefix="bitmoji-export-") as folder:
        source = load_source(checkpoint, run_id, experiment, Path(folder), store=store, lists_dir=lists_dir)
        logger.info(
            "exporting %s (epoch %s, %s) from %s",
            source.payload["model"],
            source.payload.get("epoch"),
            "no validation" if source.val_acc is None else f"val acc {source.val_acc:.2%}",
            source.description,
        )
        report, report_path, validation = _export_checked(source, output, Path(folder), lists_dir)
        result = ExportResult(output, output.stat().st_size, report, source.run_id)
        logger.info("wrote %s (%.0f KiB) and %s", output, result.bytes / 1024, report_path)
        files = ExportedFiles(output, report_path, output, "fp32", source.val_acc)
        if quantize == "int8":
            int8 = quantize_beside(fp32_path=output, lists_dir=lists_dir, validation=validation)
            result.int8 = int8
            if int8.decision.int8:
                files = dataclasses.replace(
                    files, champion=int8.path, file_format="int8", val_acc=int8.val_acc
                )
        if register:
            files = dataclasses.replace(files, example_image=first_validation_image(lists_dir))
            result.registration = on_store(
                store,
                "bitmoji_ml.export.register:register_export",
                registered_model=experiment,
                source=source.without_tensors(),
                files=files,
                known_run=checkpoint is None,
                promote=promote,
            )
    return result
