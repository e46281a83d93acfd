"""Distillation: `bitmoji train --teacher model.onnx` trains on a teacher's class probabilities
for the training images instead of (or mixed with) their labels.

The teacher (typically a cv ensemble, `export-onnx --cv-run`) is run once, with onnxruntime,
on the training images exactly as they were decoded for the student, before any augmentation:
each image keeps its teacher targets under every augmented view (a flip or a small shift does not
change who the face is). The targets are `teacher_weight` x the teacher's probabilities +
(1 - teacher_weight) x the one-hot label; the recipe's label smoothing applies on top, as it does
to labels. Validation and every metric still use the labels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import file_sha256
from bitmoji_ml.serving.onnx_model import LOGITS_OUTPUT, OnnxModel
from bitmoji_ml.training.data import TrainData

BATCH = 256
MEMBERS_KEY = "ensemble_members"  # export/ensemble.py's metadata key (not imported: export is above training)


def load_teacher(path: str | Path, preprocess: Preprocess, threads: int = 0) -> OnnxModel:
    """The teacher model, refused unless it decodes images exactly as the student does (its
    probabilities are computed on the student's decoded images)."""
    teacher = OnnxModel.load(path, threads)
    if teacher.preprocess != preprocess:
        raise BitmojiError(
            f"teacher {path} preprocesses images as {teacher.preprocess.to_dict()}, the student as "
            f"{preprocess.to_dict()}: train the student with the teacher's model and image size"
        )
    return teacher


def teacher_probabilities(teacher: OnnxModel, images: np.ndarray) -> np.ndarray:
    """(N, classes) float32 class probabilities: the softmax of the teacher's logits output
    (an ensemble's logits are the log of its members' mean probabilities)."""
    batches = []
    for start in range(0, len(images), BATCH):
        (logits,) = teacher.session.run([LOGITS_OUTPUT], {teacher.input_name: images[start : start + BATCH]})
        logits = logits.astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        batches.append(exp / exp.sum(axis=1, keepdims=True))
    return np.concatenate(batches).astype(np.float32)


def distillation_targets(probabilities: np.ndarray, labels: np.ndarray, teacher_weight: float) -> np.ndarray:
    """`teacher_weight` x the teacher's probabilities + the rest x the one-hot labels."""
    if probabilities.shape[0] != len(labels) or probabilities.shape[1] <= int(labels.max()):
        raise BitmojiError(
            f"the teacher gives {probabilities.shape[1]} class probabilities for {probabilities.shape[0]} "
            f"images; the student trains {len(labels)} images with labels up to {int(labels.max())}"
        )
    one_hot = np.eye(probabilities.shape[1], dtype=np.float32)[labels]
    return (teacher_weight * probabilities + (1 - teacher_weight) * one_hot).astype(np.float32)


def with_teacher(
    data: TrainData, path: str, teacher_weight: float, preprocess: Preprocess, threads: int
) -> TrainData:
    """`data` with the teacher's targets for its training images."""
    teacher = load_teacher(path, preprocess, threads)
    targets = distillation_targets(
        teacher_probabilities(teacher, data.train_images), data.train_labels, teacher_weight
    )
    return dataclasses.replace(data, train_targets=targets)


def teacher_tags(path: str) -> dict[str, str]:
    """What the run records about its teacher besides the `teacher` param (the path): the file's
    sha256 (the one its export and registration record) and, for an ensemble, its members."""
    if not path:
        return {}
    tags = {"teacher_sha256": file_sha256(Path(path))}
    members = OnnxModel.load(path, threads=1).metadata.get(MEMBERS_KEY)
    if members:
        tags["teacher_members"] = members
    return tags
