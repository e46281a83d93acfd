"""The tracking package read back through MLflow: the store leaves MLflow's process-wide state
alone, lineage (which metric is linked to which dataset and model), and the export ranking,
which only compares checkpoints scored on the current validation list."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from conftest import ROOT
from mlflow import MlflowClient
from trained_store import EXPERIMENT, TrainedStore, exported_store, trained_store

from bitmoji_ml import evaluation
from bitmoji_ml.data.dataset import load_dataset
from bitmoji_ml.data.lists import read_manifest, write_lists
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.tracking.names import CHECKPOINT_MODEL_TYPE
from bitmoji_ml.tracking.ranking import best_logged_checkpoint
from bitmoji_ml.tracking.runs import TrainingRun
from bitmoji_ml.tracking.store import TRACKING_URI_ENV, Store


@contextlib.contextmanager
def captured(name: str) -> Iterator[list[str]]:
    """The INFO messages logger `name` emits inside the block."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def val_digest(lists: Path) -> str:
    return read_manifest(lists)["files"]["val.txt"][:16]


# --- the store ---------------------------------------------------------------------------------


def test_store_leaves_mlflow_process_wide_uri_alone(mlflow_store: str, tmp_path: Path):
    before = mlflow.get_tracking_uri()
    other = f"sqlite:///{tmp_path}/other.db"
    store = Store.open(other)
    store.experiment_id("somewhere")
    assert mlflow.get_tracking_uri() == before
    assert os.environ[TRACKING_URI_ENV] == mlflow_store
    with store.process_default():
        assert mlflow.get_tracking_uri() == other
    assert mlflow.get_tracking_uri() == before
    assert os.environ[TRACKING_URI_ENV] == mlflow_store  # MLflow rewrites it; the store restores it
    assert MlflowClient(tracking_uri=mlflow_store).get_experiment_by_name("somewhere") is None


def test_process_default_restores_a_uri_pinned_with_set_tracking_uri(
    mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pinned = f"sqlite:///{tmp_path}/pinned.db"
    mlflow.set_tracking_uri(pinned)  # what a user's own code may have done: it wins over the variable
    try:
        store = Store.open(f"sqlite:///{tmp_path}/other.db")
        with store.process_default():
            assert mlflow.get_tracking_uri() == store.uri
        assert mlflow.get_tracking_uri() == pinned
    finally:
        mlflow.set_tracking_uri(None)  # unpinned again (this also unsets the variable)
        monkeypatch.setenv(TRACKING_URI_ENV, mlflow_store)


def test_the_package_uses_no_private_mlflow_api():
    """Defect i: mlflow has no upper bound, so a private name (`_use_tracking_uri`) may vanish
    in any release; only public modules and names."""
    private = re.compile(r"mlflow(\.\w+)*\._\w+|from mlflow[\w.]* import .*\b_\w+")
    root = Path(__file__).resolve().parent.parent
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in [root / "cli.py", *sorted((root / "bitmoji_ml").rglob("*.py"))]
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if private.search(line)
    ]
    assert found == []


def test_an_unreachable_tracking_server_is_reported_in_whole_words(monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BitmojiError) as raised:
        Store.open(f"http://127.0.0.1:{port}")
    message = str(raised.value)
    assert message == (
        f"cannot use the MLflow tracking store 'http://127.0.0.1:{port}': Connection refused. "
        "Fix or unset MLFLOW_TRACKING_URI (the default is sqlite:///mlruns/mlflow.db)."
    )


def test_a_sqlite_store_that_cannot_be_opened_fails_at_once(tmp_path: Path):
    """MLflow retries such a file for about two minutes; the store opens it itself first."""
    (tmp_path / "a-file").write_text("")
    with pytest.raises(BitmojiError) as raised:
        Store.open(f"sqlite:///{tmp_path}/a-file/mlflow.db")  # a folder that is a file
    assert str(raised.value).startswith(
        f"cannot use the MLflow tracking store 'sqlite:///{tmp_path}/a-file/mlflow.db': "
    )
    assert "File exists" in str(raised.value) or "Not a directory" in str(raised.value)
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(BitmojiError, match="unable to open database file"):
        Store.open(f"sqlite:///{tmp_path}/folder.db")  # a database path that is a folder


def test_experiment_without_create_is_a_no_runs_yet_error(mlflow_store: str):
    with pytest.raises(BitmojiError, match="no runs yet"):
        Store.open().experiment_id("absent", create=False)


# --- lineage of a training run (defect 7) ---------------------------------------------------------


@pytest.fixture
def store(tmp_path_factory, mlflow_store_template, monkeypatch) -> TrainedStore:
    built = trained_store(tmp_path_factory, mlflow_store_template)
    monkeypatch.setenv(TRACKING_URI_ENV, built.uri)
    return built


def test_training_lineage_train_and_val_have_their_own_digests_and_only_val_metrics_are_linked(
    store: TrainedStore,
):
    client = MlflowClient(tracking_uri=store.uri)
    files = read_manifest(store.lists)["files"]
    run = client.get_run(store.run_ids[0])
    inputs = {
        item.dataset.name: (item.dataset.digest, {tag.value for tag in item.tags})
        for item in run.inputs.dataset_inputs
    }
    assert inputs == {
        "bitmoji-train": (files["train.txt"][:16], {"training"}),
        "bitmoji-val": (files["val.txt"][:16], {"validation"}),
    }
    (checkpoint,) = client.search_logged_models(  # one epoch, one best checkpoint
        [run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}' AND model_type = '{CHECKPOINT_MODEL_TYPE}'",
    )
    assert checkpoint.model_id in {output.model_id for output in run.outputs.model_outputs}
    linked = {
        metric.key: (metric.dataset_name, metric.dataset_digest, metric.step) for metric in checkpoint.metrics
    }
    assert linked == {
        "val_acc": ("bitmoji-val", files["val.txt"][:16], 1),
        "val_loss": ("bitmoji-val", files["val.txt"][:16], 1),
    }
    assert {"train_loss", "train_acc", "lr"} <= set(run.data.metrics)  # logged, on the run alone


def test_evaluation_run_is_linked_to_the_evaluated_logged_model_and_the_val_dataset(
    tmp_path_factory, mlflow_store_template, monkeypatch
):
    built = exported_store(tmp_path_factory, mlflow_store_template)
    monkeypatch.setenv(TRACKING_URI_ENV, built.uri)
    client = MlflowClient(tracking_uri=built.uri)
    champion = client.get_model_version_by_alias(EXPERIMENT, "champion")
    model_id = champion.source.removeprefix("models:/")
    result = evaluation.evaluate_job(
        lists_dir=built.lists, experiment=EXPERIMENT, threads=1, store=Store.open(built.uri)
    )
    run = client.get_run(result.run_id)
    assert [model.model_id for model in run.inputs.model_inputs] == [model_id]
    (scored,) = run.inputs.dataset_inputs
    assert (scored.dataset.name, scored.dataset.digest) == ("bitmoji-val", val_digest(built.lists))
    linked = [
        metric for metric in client.get_logged_model(model_id).metrics if metric.run_id == run.info.run_id
    ]
    assert {metric.key for metric in linked} >= {"accuracy", "f1", "roc_auc", "log_loss"}
    assert {(metric.dataset_name, metric.dataset_digest) for metric in linked} == {
        ("bitmoji-val", val_digest(built.lists))
    }


# --- the export ranking (defect 3) ----------------------------------------------------------------


def log_checkpoint(store: Store, *, lists: Path, val_acc: float, folder: Path) -> str:
    """A run with one best checkpoint scored `val_acc` on the val list now in `lists`."""
    checkpoint = folder / "best.pt"
    checkpoint.write_bytes(f"scored {val_acc}".encode())
    with TrainingRun(store, experiment_id=store.experiment_id(EXPERIMENT)) as run:
        run.log_start(params={"lr": "0.003"}, tags={}, lists_dir=lists, manifest=read_manifest(lists))
        metrics = {
            "train_loss": 0.1,
            "train_acc": 0.99,
            "val_loss": 1 - val_acc,
            "val_acc": val_acc,
            "lr": 0.001,
        }
        run.log_epoch(epoch=1, metrics=metrics, best_checkpoint=checkpoint, model_name="compact")
    return run.run_id


def test_export_ranks_only_checkpoints_scored_on_the_current_val_list(
    mlflow_store: str, tiny_dataset: Path, tmp_path: Path
):
    store, lists, dataset = Store.open(), tmp_path / "lists", load_dataset(tiny_dataset)
    write_lists(dataset, lists, val_fraction=0.25, seed=0)
    old_digest = val_digest(lists)
    scored_on_old_list = log_checkpoint(store, lists=lists, val_acc=0.99, folder=tmp_path)
    write_lists(dataset, lists, val_fraction=0.25, seed=1)  # a re-prepare: another validation list
    assert val_digest(lists) != old_digest
    with pytest.raises(BitmojiError, match="scored on the current validation list.*or pass --run-id"):
        best_logged_checkpoint(store, experiment=EXPERIMENT, lists_dir=lists, folder=tmp_path / "none")

    scored_on_current_list = log_checkpoint(store, lists=lists, val_acc=0.80, folder=tmp_path)
    with captured("bitmoji_ml.tracking.ranking") as messages:
        best = best_logged_checkpoint(store, experiment=EXPERIMENT, lists_dir=lists, folder=tmp_path / "best")
    assert best.run_id == scored_on_current_list != scored_on_old_list
    assert best.path.read_bytes() == b"scored 0.8"
    assert best.val_digest == val_digest(lists)
    assert any(str(lists / "val.txt") in message and val_digest(lists) in message for message in messages)


def test_commands_started_together_on_a_new_store_all_open_it(tmp_path: Path):
    """Opening a new SQLite store creates MLflow's tables; three processes doing it at once
    raced in MLflow's migrations and all but one failed ("duplicate column name: step")."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    code = f"from bitmoji_ml.tracking.store import Store; print(Store.open({uri!r}).experiment_id('e'))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(3)
    ]
    outcomes = [(opener.wait(timeout=120), opener.stderr.read()) for opener in openers]
    assert all(code == 0 for code, _ in outcomes), [error.strip().splitlines()[-1:] for _, error in outcomes]
    assert len(MlflowClient(tracking_uri=uri).search_experiments(filter_string="name = 'e'")) == 1


def test_an_experiment_made_by_another_command_since_the_lookup_is_used(tmp_path: Path):
    store = Store.open(f"sqlite:///{tmp_path}/mlflow.db")
    made_elsewhere = store.client.create_experiment("e")

    class LateStore(Store):
        lookups = 0

        def find_experiment(self, name: str) -> str | None:
            LateStore.lookups += 1  # the first lookup ran before the other command made it
            return None if LateStore.lookups == 1 else super().find_experiment(name)

    assert LateStore(store.uri, store.client).experiment_id("e") == made_elsewhere
    assert LateStore.lookups == 2
