"""`bitmoji runs`: ordering and differing params on plain RunRecords, then the command on a
store with two real training runs, which must be comparable (same names everywhere)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient
from run_shapes import Shapes, build_shapes
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


def test_runs_table_is_lean_whatever_the_params():
    runs = [
        run("aaaaaaaaaa", 0.8, 0.5, lr="0.003"),
        run("bbbbbbbbbb", 0.9, 0.4, lr="0.01", search_space="x" * 500),
    ]
    runs[0].metrics.update(epochs_run=20.0, train_seconds=61.7)
    headers, rows = comparison.runs_table(comparison.arrange(runs))
    assert headers == ["run", "name", "kind", "model", "epochs", "accuracy", "acc on", "status", "started"]
    assert rows[0][:4] == ["bbbbbbbb", "name-bbbbbbbbbb", "train", "compact"]
    assert rows[1][4:7] == [20, 0.8, "val"]
    assert rows[0][4] == "-"


def test_columns_replace_or_add_to_the_default():
    assert comparison.parse_columns(None) == list(comparison.DEFAULT_COLUMNS)
    assert comparison.parse_columns("run,params.lr") == ["run", "params.lr"]
    assert comparison.parse_columns("+params.lr,metrics.x") == [
        *comparison.DEFAULT_COLUMNS,
        "params.lr",
        "metrics.x",
    ]
    with pytest.raises(BitmojiError, match="unknown column"):
        comparison.parse_columns("run,lr")
    resumed = dataclasses.replace(run("a", 0.9, 0.3, epochs="20"), tags={"resumed.epochs": "22"})
    headers, rows = comparison.runs_table(
        comparison.arrange([resumed]), ["params.epochs", "metrics.best_val_acc"]
    )
    assert (headers, rows) == (["params.epochs", "metrics.best_val_acc"], [["22", 0.9]])


def test_compare_table_shows_the_differing_fields_or_all_of_them():
    runs = [
        run("aaaaaaaaaa", 0.8, 0.5, lr="0.003", seed="0"),
        run("bbbbbbbbbb", 0.9, 0.4, lr="0.01", seed="0"),
    ]
    table = comparison.compare_table(runs)
    assert table.headers == ["field", "aaaaaaaa", "bbbbbbbb"]
    by_field = {row[0]: row[1:] for row in table.rows}
    assert by_field["params.lr"] == ["0.003", "0.01"]
    assert by_field["metrics.best_val_acc"] == ["0.8", "0.9"]
    assert "params.seed" not in by_field and "tags.model" not in by_field
    assert table.same == len(comparison.compare_fields(runs)) - len(table.rows)
    every = {row[0]: row[1:] for row in comparison.compare_table(runs, all_fields=True).rows}
    assert every["params.lr *"] == ["0.003", "0.01"]
    assert every["params.seed"] == ["0", "0"]
    assert every["tags.model"] == ["compact", "compact"]


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
    # the same columns; an exported run adds its registered file's accuracy (other tests export)
    assert set(first.data.metrics) ^ set(second.data.metrics) <= {"exported_val_acc"}
    assert {"best_val_acc", "best_val_loss", "final_val_acc", "val_acc", "val_loss", "train_seconds"} <= set(
        first.data.metrics
    )
    assert set(first.data.params) == set(second.data.params)  # flat, stable names
    for tracked in (first, second):
        assert tracked.data.tags["model"] == DEFAULT_MODEL
        assert tracked.info.run_name.startswith(f"{DEFAULT_MODEL}-")
        assert f"bs{tracked.data.params['batch_size']}" in tracked.info.run_name
        assert f"lr{float(tracked.data.params['lr']):g}" in tracked.info.run_name


def test_runs_command_orders_by_val_acc(store: TrainedStore):
    result = CliRunner().invoke(cli.app, ["runs", "--experiment", EXPERIMENT])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines[0].split()
    assert header == ["run", "name", "kind", "model", "epochs", "accuracy", "acc", "on", "status", "started"]
    client = MlflowClient()
    metrics = {run_id: client.get_run(run_id).data.metrics for run_id in store.run_ids}
    expected = sorted(store.run_ids, key=lambda r: (-metrics[r]["best_val_acc"], metrics[r]["best_val_loss"]))
    assert [line.split()[0] for line in lines[2:4]] == [run_id[:8] for run_id in expected]
    assert "2 run(s) in test-exp" in result.output  # evaluation runs are not listed


def test_runs_compare_side_by_side(store: TrainedStore):
    ids = [run_id[:10] for run_id in store.run_ids]
    result = CliRunner().invoke(cli.app, ["runs", "--experiment", EXPERIMENT, "--compare", *ids])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["field", *(run_id[:8] for run_id in store.run_ids)]
    fields = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert fields["params.batch_size"] == ["16", "8"]
    assert "metrics.best_val_acc" in fields
    assert "params.seed" not in fields  # the same in both runs


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
    assert "1 run(s) in test-exp" in result.output and "2 evaluation run(s)" in result.output
    result = CliRunner().invoke(cli.app, ["runs", "--experiment", EXPERIMENT, "--evaluations"])
    assert result.exit_code == 0, result.output
    assert "eval-m.onnx-val" in result.output and "compact-run" not in result.output
    chosen = CliRunner().invoke(
        cli.app, ["runs", "--experiment", EXPERIMENT, "--evaluations", logged.run_id[:10]]
    )
    assert chosen.exit_code == 0, chosen.output
    assert [line.split()[0] for line in chosen.output.splitlines()[2:-1]] == [logged.run_id[:8]]
    last = result.output.splitlines()[-1]  # it names the experiment the runs are in
    assert (
        last == "1 evaluation run(s) in test-exp-evaluations (and 1 that an older version logged in test-exp)"
    )


def test_evaluations_table_shows_the_f1_of_two_classes_and_the_macro_f1_of_more():
    def evaluation(run_id: str, metrics: dict[str, float]) -> RunRecord:
        return RunRecord(run_id, run_id, "FINISHED", 1, {}, metrics, {"evaluation": "true"})

    bitmoji = evaluation("bitmoji0", {"accuracy": 0.99, "f1": 0.98, "roc_auc": 0.999, "log_loss": 0.05})
    digits = evaluation("digits00", {"accuracy": 0.97, "macro_f1": 0.96, "log_loss": 0.1})
    headers, rows = comparison.evaluations_table([bitmoji, digits])
    by_run = {row[0]: dict(zip(headers, row, strict=True)) for row in rows}
    assert (by_run["bitmoji0"]["f1"], by_run["bitmoji0"]["macro_f1"]) == (0.98, "-")
    assert (by_run["digits00"]["f1"], by_run["digits00"]["macro_f1"]) == ("-", 0.96)


# --- every kind of run (tracking shapes logged by the jobs' own classes) ---------------------------


@pytest.fixture
def shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shapes:
    store, built = build_shapes(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    return built


def listed(*arguments: str) -> tuple[list[list[str]], list[str]]:
    """`bitmoji runs --experiment shapes ARGUMENTS`: the table's rows (split on 2+ spaces) and
    its lines."""
    result = CliRunner().invoke(cli.app, ["runs", "--experiment", "shapes", *arguments])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rows = [re.split(r"  +", line.strip()) for line in lines[2:-1]]
    return rows, lines


def test_runs_lists_top_level_runs_in_about_120_columns(shapes: Shapes):
    rows, lines = listed()
    assert max(len(line) for line in lines[:-1]) <= 120
    assert lines[0].split() == [
        "run",
        "name",
        "kind",
        "model",
        "epochs",
        "accuracy",
        "acc",
        "on",
        "status",
        "started",
    ]
    by_id = {row[0]: row for row in rows}
    assert set(by_id) == {
        r[:8] for r in (shapes.train, shapes.other, shapes.refit, shapes.torchrun, shapes.cv, shapes.tune)
    }
    assert by_id[shapes.train[:8]][2:7] == ["train", "hybrid", "22", "0.9700", "val"]  # resumed to 22 epochs
    assert by_id[shapes.torchrun[:8]][2] == "torchrun"
    assert by_id[shapes.refit[:8]][2:7] == ["refit", "hybrid", "20", "-", "-"]  # no validation
    assert by_id[shapes.cv[:8]][2:7] == ["cv", "hybrid", "20", "0.7500", "oof"]  # 3 of 4 out of fold
    assert by_id[shapes.tune[:8]][2] == "tune" and by_id[shapes.tune[:8]][5:7] == ["0.9100", "tune val"]
    assert [row[0] for row in rows[:3]] == [shapes.train[:8], shapes.torchrun[:8], shapes.other[:8]]
    assert "4 child run(s) (cv folds, tune trials) not shown: --children" in lines[-1]


def test_runs_children_come_under_their_parent(shapes: Shapes):
    rows, _ = listed("--children")
    ids = [row[0] for row in rows]
    cv = ids.index(shapes.cv[:8])
    assert ids[cv + 1 : cv + 3] == [fold[:8] for fold in shapes.folds]
    assert [row[2] for row in rows[cv + 1 : cv + 3]] == ["fold", "fold"]
    tune = ids.index(shapes.tune[:8])
    assert ids[tune + 1 : tune + 3] == [trial[:8] for trial in shapes.trials]
    rows, _ = listed("--parent", shapes.cv[:6])
    assert [row[0] for row in rows] == [fold[:8] for fold in shapes.folds]


def test_runs_filter_and_columns(shapes: Shapes):
    rows, lines = listed("--filter", "params.lr = '0.01'", "--columns", "run,params.lr,metrics.best_val_acc")
    assert lines[0].split() == ["run", "params.lr", "metrics.best_val_acc"]
    assert rows == [[shapes.other[:8], "0.01", "0.9500"]]
    result = CliRunner().invoke(cli.app, ["runs", "--experiment", "shapes", "--filter", "params.lr === 1"])
    assert result.exit_code == 1 and "--filter 'params.lr === 1'" in result.output


def test_compare_uses_the_values_a_resumed_run_trained_with(shapes: Shapes):
    result = CliRunner().invoke(
        cli.app, ["runs", "--experiment", "shapes", "--compare", shapes.train, shapes.other]
    )
    assert result.exit_code == 0, result.output
    fields = {
        re.split(r"  +", line)[0]: re.split(r"  +", line)[1:] for line in result.output.splitlines()[2:-1]
    }
    assert fields["params.epochs"] == ["22 (resumed; was 20)", "20"]
    assert fields["metrics.epochs_run"] == ["22", "20"]
    assert fields["params.lr"] == ["0.002", "0.01"]
    assert "params.seed" not in fields and "status" not in fields
    assert result.output.splitlines()[-1].endswith("not shown: --all-fields")


def test_compare_cuts_long_values_and_lists_parents_side_by_side(shapes: Shapes):
    result = CliRunner().invoke(
        cli.app, ["runs", "--experiment", "shapes", "--compare", shapes.cv, shapes.tune]
    )
    assert result.exit_code == 0, result.output
    fields = {
        re.split(r"  +", line)[0]: re.split(r"  +", line)[1:] for line in result.output.splitlines()[2:-1]
    }
    assert fields["kind"] == ["cv", "tune"]
    assert fields["metrics.oof_acc"] == ["0.75", "-"]
    space = fields["params.search_space"][1]  # a repr of the whole search space, hundreds of characters
    assert len(space) == comparison.VALUE_WIDTH and space.endswith("…")
