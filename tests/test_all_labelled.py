"""`train --all-labelled`: the final refit on train + val, without validation; exportable by
--run-id, never ranked by a val accuracy it does not have."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

import cli
from bitmoji_ml.checkpoints import read_checkpoint
from bitmoji_ml.data.lists import read_list
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.export.job import export_job
from bitmoji_ml.recipe import resolve_recipe
from bitmoji_ml.tracking.ranking import best_logged_checkpoint
from bitmoji_ml.tracking.store import Store
from bitmoji_ml.training import train_job

SETTINGS = {"epochs": 2, "batch_size": 16, "threads": 1, "image_size": 32}


def test_all_labelled_trains_on_every_labelled_image_and_keeps_the_last_epoch(
    tiny_lists: Path, mlflow_store: str
):
    result = train_job(
        lists_dir=tiny_lists,
        experiment="e",
        recipe=resolve_recipe(overrides={**SETTINGS, "all_labelled": True}),
    )
    labelled = read_list(tiny_lists / "train.txt") + read_list(tiny_lists / "val.txt")
    assert result.train_images == len(labelled) == 40
    assert result.best_val_acc is None and result.best_epoch == 2
    assert read_checkpoint(result.best_checkpoint)["epoch"] == 2
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.data.params["all_labelled"] == "True"
    assert not [key for key in run.data.metrics if "val" in key]  # no validation, no val metrics
    contexts = {(d.dataset.name, d.tags[0].value) for d in run.inputs.dataset_inputs}
    assert contexts == {("bitmoji-train", "training"), ("bitmoji-val", "training")}
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert model.tags["selection"] == "last_epoch" and not model.metrics
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {"plots/learning_curves.png"}


def test_export_does_not_rank_an_all_labelled_run_and_exports_it_by_run_id(
    tiny_lists: Path, mlflow_store: str, tmp_path: Path
):
    refit = train_job(
        lists_dir=tiny_lists,
        experiment="e",
        recipe=resolve_recipe(overrides={**SETTINGS, "all_labelled": True}),
    )
    store = Store.open()
    with pytest.raises(BitmojiError, match="without validation selection.*pass --run-id"):
        best_logged_checkpoint(store, experiment="e", lists_dir=tiny_lists, folder=tmp_path)
    scored = train_job(
        lists_dir=tiny_lists, experiment="e", recipe=resolve_recipe(overrides={**SETTINGS, "epochs": 1})
    )
    best = best_logged_checkpoint(store, experiment="e", lists_dir=tiny_lists, folder=tmp_path / "best")
    assert best.run_id == scored.run_id
    exported = export_job(
        output=tmp_path / "refit.onnx", run_id=refit.run_id, lists_dir=tiny_lists, register=False, store=store
    )
    assert exported.run_id == refit.run_id and (tmp_path / "refit.onnx").stat().st_size > 0


def test_all_labelled_refuses_early_stopping(tiny_lists: Path, mlflow_store: str):
    with pytest.raises(BitmojiError, match="patience"):
        resolve_recipe(overrides={"all_labelled": True, "patience": 3})
    result = CliRunner().invoke(
        cli.app, ["train", "--all-labelled", "--patience", "2", "--lists", str(tiny_lists)]
    )
    assert result.exit_code == 1 and "--all-labelled trains without validation" in result.output
