"""Distillation (`train --teacher`): the student's loss trains towards the teacher file's
probabilities for its training images, mixed with the labels as asked, and the run records it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from bitmoji_ml.data.cache import load_list
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import file_sha256
from bitmoji_ml.models import DEFAULT_MODEL, create_model, model_spec
from bitmoji_ml.recipe import resolve_recipe
from bitmoji_ml.training import loop, nested, train_job
from bitmoji_ml.training.teacher import distillation_targets, load_teacher, teacher_probabilities
from tests.random_model import export_network


@pytest.fixture
def teacher(tmp_path: Path) -> Path:
    """A default-size network with seeded random weights as an ONNX file: its probabilities are
    nothing like the labels, so a loss that used the labels could not match them."""
    torch.manual_seed(7)
    _, onnx_file = export_network(tmp_path, create_model(DEFAULT_MODEL).eval(), name="teacher")
    return onnx_file


def expected_targets(lists: Path, teacher: Path, weight: float) -> np.ndarray:
    preprocess = model_spec(DEFAULT_MODEL).preprocess
    images, labels, _ = load_list(lists / "train.txt", preprocess)
    probabilities = teacher_probabilities(load_teacher(teacher, preprocess), images)
    return distillation_targets(probabilities, labels, weight)


def test_student_loss_uses_the_teacher_files_targets(
    tiny_lists: Path, mlflow_store: str, teacher: Path, monkeypatch: pytest.MonkeyPatch
):
    weight = 0.75
    expected = torch.from_numpy(expected_targets(tiny_lists, teacher, weight))
    assert not torch.allclose(expected.max(1).values, torch.ones(len(expected)))  # soft, not labels
    seen: list[torch.Tensor] = []
    original = loop.train_step

    def spy(state, images, targets, config, loss_weight=1.0):
        logits, objective = original(state, images, targets, config, loss_weight)
        seen.append(targets)
        # the objective is the cross-entropy against these probabilities (label smoothing on top)
        against = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
        assert torch.allclose(objective, against, atol=1e-5)
        return logits, objective

    monkeypatch.setattr(loop, "train_step", spy)
    overrides = {
        "epochs": 1,
        "batch_size": 8,
        "threads": 1,
        "teacher": str(teacher),
        "teacher_weight": weight,
    }
    result = train_job(
        lists_dir=tiny_lists, experiment="test-exp", recipe=resolve_recipe(overrides=overrides)
    )

    rows = torch.cat(seen)
    assert rows.dtype == torch.float32 and rows.shape[1] == 2
    assert len(rows) == len(expected)  # every training image once in the epoch
    # each row the loss trained towards is the teacher-and-label mix of one training image
    distance = torch.cdist(rows.double(), expected.double()).min(dim=1).values
    assert distance.max() < 1e-6
    run = MlflowClient().get_run(result.run_id)
    assert run.data.params["teacher"] == str(teacher)
    assert run.data.params["teacher_weight"] == str(weight)
    assert run.data.tags["teacher_sha256"] == file_sha256(teacher)


def test_teacher_weight_mixes_probabilities_and_labels():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7]], dtype=np.float32)
    labels = np.array([1, 1])
    mixed = distillation_targets(probabilities, labels, 0.5)
    np.testing.assert_allclose(mixed, [[0.45, 0.55], [0.15, 0.85]], rtol=1e-6)
    np.testing.assert_allclose(distillation_targets(probabilities, labels, 1.0), probabilities)


def test_a_teacher_that_decodes_differently_is_refused_before_a_run(
    tiny_lists: Path, mlflow_store: str, tmp_path: Path
):
    preprocess = dataclasses.replace(model_spec(DEFAULT_MODEL).preprocess, size=48, resize=52)
    _, other = export_network(
        tmp_path, create_model(DEFAULT_MODEL, preprocess).eval(), name="t", preprocess=preprocess
    )
    recipe = resolve_recipe(overrides={"epochs": 1, "threads": 1, "teacher": str(other)})
    with pytest.raises(BitmojiError, match="preprocesses images"):
        train_job(lists_dir=tiny_lists, experiment="test-exp", recipe=recipe)
    assert not MlflowClient().search_runs([MlflowClient().get_experiment_by_name("test-exp").experiment_id])


def test_cv_folds_and_tune_trials_refuse_a_teacher(teacher: Path):
    config = resolve_recipe(overrides={"teacher": str(teacher)}).recipe
    with pytest.raises(BitmojiError, match="train` only"):
        nested.train_on_data(run=None, config=config, data=None, datasets=None)  # type: ignore[arg-type]


def test_teacher_weight_without_teacher_is_refused():
    with pytest.raises(BitmojiError, match="only with --teacher"):
        resolve_recipe(overrides={"teacher_weight": 0.5})
