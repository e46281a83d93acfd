"""What the MLflow UI shows, read back through MLflow without a browser (issue 20): experiments
that say they are model training, one logged model per training run for its best checkpoint,
the registered version shown on its logged model, and evaluations linked to what they scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus, RunStatus
from mlflow.exceptions import MlflowException
from trained_store import EXPERIMENT, exported_store

from bitmoji_ml import evaluation
from bitmoji_ml.data.lists import read_manifest
from bitmoji_ml.tracking.names import (
    CHECKPOINT_MODEL_TYPE,
    EXPERIMENT_KIND_TAG,
    IMAGE_LOGGED_MODEL,
    MODEL_TRAINING_KIND,
)
from bitmoji_ml.tracking.ranking import best_logged_checkpoint
from bitmoji_ml.tracking.registration import EXPORTED_VAL_ACC
from bitmoji_ml.tracking.runs import TrainingRun
from bitmoji_ml.tracking.store import TRACKING_URI_ENV, Store


def test_experiments_the_tool_makes_or_opens_say_they_are_model_training(mlflow_store: str):
    store = Store.open()
    made = store.experiment_id("made-here")
    older = store.client.create_experiment("made-before")  # e.g. by an earlier version
    assert EXPERIMENT_KIND_TAG not in store.client.get_experiment(older).tags
    assert store.experiment_id("made-before", create=False) == older
    for experiment_id in (made, older):
        tags = store.client.get_experiment(experiment_id).tags
        assert tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND


def test_a_store_that_refuses_the_experiment_tag_is_still_usable(mlflow_store: str, monkeypatch):
    store = Store.open()
    made = store.client.create_experiment("read-only")

    def refuse(*args, **kwargs):
        raise MlflowException("PERMISSION_DENIED")

    monkeypatch.setattr(store.client, "set_experiment_tag", refuse)
    assert store.experiment_id("read-only", create=False) == made


def epoch(run: TrainingRun, folder: Path, number: int, val_acc: float, best: bool) -> None:
    """One epoch of `run`; when `best`, a best.pt that says which epoch wrote it."""
    checkpoint = None
    if best:
        checkpoint = folder / "best.pt"
        checkpoint.write_bytes(f"epoch {number}".encode())
    metrics = {"train_loss": 0.1, "val_loss": 1 - val_acc, "val_acc": val_acc, "lr": 0.001}
    run.log_epoch(epoch=number, metrics=metrics, best_checkpoint=checkpoint, model_name="hybrid")


def checkpoint_models(client: MlflowClient, run_id: str) -> list:
    run = client.get_run(run_id)
    return client.search_logged_models(
        [run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND model_type = '{CHECKPOINT_MODEL_TYPE}'",
    )


def test_one_logged_model_per_run_follows_its_best_checkpoint(
    mlflow_store: str, tiny_lists: Path, tmp_path: Path
):
    store = Store.open()
    with TrainingRun(store, experiment_id=store.experiment_id(EXPERIMENT)) as run:
        run.log_start(params={}, tags={}, lists_dir=tiny_lists, manifest=read_manifest(tiny_lists))
        for number, (val_acc, best) in enumerate([(0.7, True), (0.8, True), (0.75, False), (0.9, True)], 1):
            epoch(run, tmp_path, number, val_acc, best)
    (model,) = checkpoint_models(store.client, run.run_id)  # not one per improvement
    assert model.name == "hybrid-best" and model.status == LoggedModelStatus.READY
    assert model.tags["step"] == "4"
    latest = {metric.key: metric.value for metric in sorted(model.metrics, key=lambda m: m.step)}
    assert latest["val_acc"] == pytest.approx(0.9)
    assert [output.model_id for output in store.client.get_run(run.run_id).outputs.model_outputs] == [
        model.model_id
    ]
    history = store.client.get_metric_history(run.run_id, "val_acc")  # the history stays on the run
    assert [metric.value for metric in history] == pytest.approx([0.7, 0.8, 0.75, 0.9])
    best = best_logged_checkpoint(store, experiment=EXPERIMENT, lists_dir=tiny_lists, folder=tmp_path / "x")
    assert (best.model_id, best.path.read_bytes()) == (model.model_id, b"epoch 4")


def test_an_interrupted_run_s_best_is_exportable_and_resuming_keeps_one_model(
    mlflow_store: str, tiny_lists: Path, tmp_path: Path
):
    store = Store.open()
    experiment_id = store.experiment_id(EXPERIMENT)
    with pytest.raises(KeyboardInterrupt), TrainingRun(store, experiment_id=experiment_id) as run:
        run.log_start(params={}, tags={}, lists_dir=tiny_lists, manifest=read_manifest(tiny_lists))
        epoch(run, tmp_path, 1, 0.8, True)
        raise KeyboardInterrupt
    assert store.get_run(run.run_id).info.status == RunStatus.to_string(RunStatus.KILLED)
    best = best_logged_checkpoint(store, experiment=EXPERIMENT, lists_dir=tiny_lists, folder=tmp_path / "a")
    assert best.path.read_bytes() == b"epoch 1"

    with TrainingRun(store, experiment_id=experiment_id, resume_run_id=run.run_id) as resumed:
        resumed.log_start(params={}, tags={}, lists_dir=tiny_lists, manifest=read_manifest(tiny_lists))
        epoch(resumed, tmp_path, 2, 0.85, True)
    (model,) = checkpoint_models(store.client, run.run_id)
    assert model.model_id == best.model_id and model.tags["step"] == "2"
    best = best_logged_checkpoint(store, experiment=EXPERIMENT, lists_dir=tiny_lists, folder=tmp_path / "b")
    assert best.path.read_bytes() == b"epoch 2"


@pytest.fixture
def exported(tmp_path_factory, mlflow_store_template, monkeypatch):
    built = exported_store(tmp_path_factory, mlflow_store_template)
    monkeypatch.setenv(TRACKING_URI_ENV, built.uri)
    return built


def champion_model_id(client: MlflowClient) -> str:
    """The logged model @champion was registered from (its source is models:/<id>)."""
    return client.get_model_version_by_alias(EXPERIMENT, "champion").source.removeprefix("models:/")


def test_the_champion_s_logged_model_shows_its_registered_version_and_metrics(exported):
    client = MlflowClient(tracking_uri=exported.uri)
    champion = client.get_model_version_by_alias(EXPERIMENT, "champion")
    model = client.get_logged_model(champion_model_id(client))
    assert model.name == IMAGE_LOGGED_MODEL
    # What mlflow.register_model records and the UI reads ("Not registered" without it).
    assert {"name": EXPERIMENT, "version": str(champion.version)} in json.loads(
        model.tags["mlflow.modelVersions"]
    )
    assert EXPORTED_VAL_ACC in {metric.key for metric in model.metrics}


def test_evaluating_an_exported_file_links_its_logged_model_and_says_what_was_scored(exported):
    client = MlflowClient(tracking_uri=exported.uri)
    result = evaluation.evaluate_job(
        model=exported.onnx, lists_dir=exported.lists, experiment=EXPERIMENT, threads=1
    )
    run = client.get_run(result.run_id)
    model_id = champion_model_id(client)
    # m.onnx is the file the registered image model holds (same sha256): it is that model.
    assert [model.model_id for model in run.inputs.model_inputs] == [model_id]
    params = run.data.params
    assert params["evaluated_model"] == str(exported.onnx.resolve())
    assert params["logged_model_id"] == model_id
    assert params["source_run_id"] == exported.run_ids[0]
    assert (params["eval_set"], params["images"]) == ("val", "10")
    on_model = {m.key for m in client.get_logged_model(model_id).metrics if m.run_id == result.run_id}
    assert {"accuracy", "roc_auc", "log_loss"} <= on_model


def test_a_file_no_export_logged_is_evaluated_unlinked(exported, tmp_path: Path):
    import onnx

    copy = tmp_path / "edited.onnx"
    graph = onnx.load(str(exported.onnx))
    graph.doc_string = "edited"  # another file whose metadata names the same run
    onnx.save(graph, str(copy))
    result = evaluation.evaluate_job(model=copy, lists_dir=exported.lists, experiment=EXPERIMENT, threads=1)
    run = MlflowClient(tracking_uri=exported.uri).get_run(result.run_id)
    assert run.inputs.model_inputs == [] and run.data.params["logged_model_id"] == "-"
