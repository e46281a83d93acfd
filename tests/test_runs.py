"""`bitmoji runs`: ordering and differing params on plain RunRecords, then the command on a
store with two real training runs, which must be comparable (same names everywhere)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from trained_store import EXPERIMENT, TrainedStore, trained_store
from typer.testing import CliRunner

import cli
from bitmoji_ml import comparison
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import DEFAULT_MODEL
from bitmoji_ml.tracking.datasets import labelled_files
from bitmoji_ml.tracking.evaluations import log_evaluation
from bitmoji_ml.tracking.listing import RunRecord, experiment_runs
from bitmoji_ml.tracking.names import evaluation_experiment
from bitmoji_ml.tracking.store import Store


def run(run_id: str, acc: float | None, loss: float | None, evaluation: bool = False, **params) -> RunRecord:
    metrics = {
        key: value for key, value in (("best_val_acc", acc), ("best_val_loss", loss)) if value is not None
    }
    return RunRecord(
        run_id=run_id,
        name=f"name-{run_id}",
        status="FINISHED",
        start_time=0,
        params={"model": "compact", **params},
        metrics=metrics,
        tags={"model": "compact", **({"evaluation": "true"} if evaluation else {})},
    )


def test_sorted_by_val_acc_then_lower_loss_and_unfinished_last():
    runs = [
        run("a", 0.90, 0.30),
        run("b", None, None),
        run("c", 0.95, 0.40),
        run("d", 0.90, 0.20),
    ]
    assert [r.run_id for r in comparison.sort_runs(runs)] == ["c", "d", "a", "b"]


def test_differing_params_include_keys_missing_from_some_runs():
    runs = [
        run("a", 0.9, 0.3, lr="0.003", seed="0", epochs="20"),
        run("b", 0.9, 0.3, lr="0.01", seed="0", epochs="20"),
        run("c", 0.9, 0.3, lr="0.003", seed="0", epochs="20", patience="3"),
    ]
    assert comparison.differing_params(runs) == ["lr", "patience"]
    assert comparison.differing_params(runs[:1]) == []


def test_runs_table_shows_differing_params_after_fixed_columns():
    runs = [run("aaaaaaaaaa", 0.8, 0.5, lr="0.003"), run("bbbbbbbbbb", 0.9, 0.4, lr="0.01")]
    runs[0].metrics.update(epochs_run=20.0, train_seconds=61.7)
    headers, rows = comparison.runs_table(runs)
    assert headers == [
        "run",
        "name",
        "model",
        "status",
        "epochs run",
        "best val acc",
        "val loss",
        "train s",
        "lr",
    ]
    assert rows[0][:3] == ["bbbbbbbb", "name-bbbbbbbbbb", "compact"]
    assert rows[0][-1] == "0.01"
    assert rows[1][4:] == [20, 0.8, 0.5, 62, "0.003"]
    assert rows[0][4] == "-"


def test_compare_table_is_transposed_and_marks_differences():
    runs = [
        run("aaaaaaaaaa", 0.8, 0.5, lr="0.003", seed="0"),
        run("bbbbbbbbbb", 0.9, 0.4, lr="0.01", seed="0"),
    ]
    headers, rows = comparison.compare_table(runs)
    assert headers == ["field", "aaaaaaaa", "bbbbbbbb"]
    by_field = {row[0]: row[1:] for row in rows}
    assert by_field["params.lr *"] == ["0.003", "0.01"]
    assert by_field["params.seed"] == ["0", "0"]
    assert by_field["metrics.best_val_acc"] == ["0.8", "0.9"]
    assert by_field["tags.model"] == ["compact", "compact"]


def test_select_runs_by_prefix():
    runs = [run("abc1", 0.9, 0.3), run("abd2", 0.8, 0.3)]
    assert [r.run_id for r in comparison.select_runs(runs, ["abd", "abc1"])] == ["abd2", "abc1"]
    with pytest.raises(BitmojiError, match="matches 2 runs"):
        comparison.select_runs(runs, ["ab"])
    with pytest.raises(BitmojiError, match="no run 'zz'"):
        comparison.select_runs(runs, ["zz"])


@pytest.fixture
def store(tmp_path_factory, mlflow_store_template, monkeypatch) -> TrainedStore:
    built = trained_store(tmp_path_factory, mlflow_store_template)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", built.uri)
    return built


def test_runs_are_comparable_in_the_ui(store: TrainedStore):
    client = MlflowClient()
    first, second = (client.get_run(run_id) for run_id in store.run_ids)
    assert set(first.data.metrics) == set(second.data.metrics)
    assert {"best_val_acc", "best_val_loss", "val_acc", "val_loss", "train_seconds"} <= set(
        first.data.metrics
    )
    assert set(first.data.params) == set(second.data.params)  # flat, stable names
    for tracked in (first, second):
        assert tracked.data.tags["model"] == DEFAULT_MODEL
        assert tracked.info.run_name.startswith(f"{DEFAULT_MODEL}-")
        assert f"bs{tracked.data.params['batch_size']}" in tracked.info.run_name
        assert f"lr{float(tracked.data.params['lr']):g}" in tracked.info.run_name


def test_runs_command_orders_by_val_acc_and_shows_differing_params(store: TrainedStore):
    result = CliRunner().invoke(cli.app, ["runs", "--experiment", EXPERIMENT])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines[0].split()
    assert header[:4] == ["run", "name", "model", "status"]
    assert header[-2:] == ["batch_size", "lr"]
    client = MlflowClient()
    metrics = {run_id: client.get_run(run_id).data.metrics for run_id in store.run_ids}
    expected = sorted(store.run_ids, key=lambda r: (-metrics[r]["best_val_acc"], metrics[r]["best_val_loss"]))
    assert [line.split()[0] for line in lines[2:4]] == [run_id[:8] for run_id in expected]
    assert "2 training runs in test-exp" in result.output  # evaluation runs are not listed


def test_runs_compare_side_by_side(store: TrainedStore):
    ids = [run_id[:10] for run_id in store.run_ids]
    result = CliRunner().invoke(cli.app, ["runs", "--experiment", EXPERIMENT, "--compare", *ids])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["field", *(run_id[:8] for run_id in store.run_ids)]
    fields = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert fields["params.batch_size"][1:] == ["16", "8"]  # the "*" mark comes first
    assert "metrics.best_val_acc" in fields


def test_runs_without_an_experiment_is_a_clear_error(mlflow_store: str):
    result = CliRunner().invoke(cli.app, ["runs", "--experiment", "nothing-here"])
    assert result.exit_code == 1
    assert "no runs yet" in result.output
    result = CliRunner().invoke(cli.app, ["runs", "--compare"])
    assert result.exit_code == 1
    assert "--compare needs run ids" in result.output


def test_evaluation_runs_have_an_experiment_of_their_own(mlflow_store: str, tmp_path: Path):
    store = Store.open()
    training = store.client.create_run(store.experiment_id(EXPERIMENT), run_name="compact-run")
    store.client.log_metric(training.info.run_id, "best_val_acc", 0.9)
    store.client.set_terminated(training.info.run_id)
    # An evaluation run of an older version, logged among the training runs with the tag.
    legacy = store.client.create_run(store.experiment_id(EXPERIMENT), tags={"evaluation": "true"})
    store.client.set_terminated(legacy.info.run_id)
    scored = tmp_path / "val.txt"
    scored.write_text("a.jpg 1\n")
    dataset = labelled_files(split="val", source=scored, images=["a.jpg"], labels=[1])
    files = tmp_path / "files"
    files.mkdir()
    (files / "metrics.json").write_text("{}")
    logged = log_evaluation(
        store,
        experiment=EXPERIMENT,
        run_name="eval-m.onnx-val",
        metrics={"accuracy": 1.0},
        folder=files,
        tags={},
        model_id=None,
        dataset=dataset,
    )
    assert logged.experiment == evaluation_experiment(EXPERIMENT) == f"{EXPERIMENT}-evaluations"
    assert store.client.get_run(logged.run_id).info.experiment_id == store.find_experiment(logged.experiment)

    found = experiment_runs(store, experiment=EXPERIMENT)
    assert [run.run_id for run in found.training] == [training.info.run_id]
    assert {run.run_id for run in found.evaluations} == {legacy.info.run_id, logged.run_id}
    result = CliRunner().invoke(cli.app, ["runs", "--experiment", EXPERIMENT])
    assert result.exit_code == 0, result.output
    assert "1 training runs in test-exp" in result.output and "2 evaluation run(s)" in result.output
    result = CliRunner().invoke(cli.app, ["runs", "--experiment", EXPERIMENT, "--evaluations"])
    assert result.exit_code == 0, result.output
    assert "eval-m.onnx-val" in result.output and "compact-run" not in result.output
