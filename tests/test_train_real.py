"""Integration: the default model on the real dataset (about a minute on two cores)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from bitmoji_ml.data.dataset import load_dataset
from bitmoji_ml.data.lists import write_lists
from bitmoji_ml.recipe import resolve_recipe
from bitmoji_ml.training import train_job


@pytest.mark.slow
def test_default_model_reaches_99_percent_on_real_data(real_data: Path, tmp_path: Path, mlflow_store: str):
    lists = tmp_path / "lists"
    manifest = write_lists(load_dataset(real_data), lists)
    assert manifest["counts"] == {"train": 2400, "val": 600, "test": 1084}
    result = train_job(lists_dir=lists, experiment="integration", recipe=resolve_recipe())
    assert result.best_val_acc >= 0.99
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["best_val_acc"] == result.best_val_acc
