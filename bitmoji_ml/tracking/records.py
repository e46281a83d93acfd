"""What tracking calls return, kept free of MLflow: `bitmoji evaluate` and `export-onnx` make
those calls in a child process (tracking/mlflow_process.py), and the results cross back to a
process that never imports MLflow."""

from __future__ import annotations

import dataclasses
from pathlib import Path

# Tags of a registered version: what it was exported from and what its val_acc is comparable on.
CHECKPOINT_SHA256_TAG = "checkpoint_sha256"  # sha256 of the exported checkpoint file
FORMAT_TAG = "format"  # fp32 or int8: which of the export's files the version holds
VAL_ACC_TAG = "val_acc"  # the registered file's validation accuracy ("" without validation)
DATA_DIGEST_TAG = "data_digest"  # the lists (manifest digest) that val_acc was measured on
FILE_SHA256_TAG = "file_sha256"  # on the ONNX and image logged models: their ONNX file's sha256


@dataclasses.dataclass(frozen=True)
class VersionSummary:
    """A registered version and what makes it comparable with another one."""

    version: str
    run_id: str
    val_acc: float | None
    data_digest: str
    file_format: str = ""
    checkpoint_sha256: str = ""  # of the checkpoint file it was exported from ("" if unknown)

    def tags(self, checkpoint_sha256: str) -> dict[str, str]:
        return {
            CHECKPOINT_SHA256_TAG: checkpoint_sha256,
            FORMAT_TAG: self.file_format,
            VAL_ACC_TAG: "" if self.val_acc is None else repr(self.val_acc),
            DATA_DIGEST_TAG: self.data_digest,
        }


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """An ONNX file to evaluate and what MLflow knows about it."""

    path: Path
    label: str
    uri: str
    model_id: str | None = None
    version: str = ""


@dataclasses.dataclass(frozen=True)
class TrainingList:
    """A dataset a run trained on, as MLflow recorded it: its name, the digest of its file
    (datasets.file_digest) and the file it was read from (None when not a local file)."""

    name: str
    digest: str
    source: Path | None


@dataclasses.dataclass(frozen=True)
class EvaluationRun:
    """Where an evaluation was logged."""

    run_id: str
    experiment: str
