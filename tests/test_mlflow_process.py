"""MLflow in a child process (tracking/mlflow_process.py): the run `train` makes through it is
the run `train` reports; the child's errors are raised in the parent; Ctrl-C of the whole
process group ends the run as KILLED (the child ignores the signal and is told); a parent killed
without a word leaves no run RUNNING; and the tracking functions `evaluate` and `export-onnx`
call through it answer as they do in-process, with their messages logged in the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from mlflow import MlflowClient
from test_sigterm import TIMEOUT, training_process, wait_for_line
from trained_store import EXPERIMENT as TRAINED_EXPERIMENT
from trained_store import trained_store

from bitmoji_ml.data.lists import read_manifest
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.tracking.mlflow_process import MlflowProcess, on_store
from bitmoji_ml.tracking.names import BEST_ON_VAL
from bitmoji_ml.tracking.store import Store

EXPERIMENT = "bitmoji-gender"


def the_run(uri: str):
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    return run


def test_a_run_made_and_ended_through_the_child(mlflow_store: str, tiny_lists: Path):
    with MlflowProcess(EXPERIMENT) as process:
        assert process.ready().uri == mlflow_store
        with process.run(run_name="through-the-child", selection=BEST_ON_VAL) as run:
            run.log_start(
                params={"epochs": "3"},
                tags={"model": "compact"},
                manifest=read_manifest(tiny_lists),
                lists_dir=tiny_lists,
                all_labelled=False,
            )
            run.log_summary({"best_val_acc": 0.75})
            run_id = run.run_id
    logged = the_run(mlflow_store)
    assert logged.info.run_id == run_id
    assert logged.info.run_name == "through-the-child"
    assert logged.info.status == "FINISHED"
    assert logged.data.params["epochs"] == "3"
    assert logged.data.metrics["best_val_acc"] == 0.75
    assert {dataset.dataset.name for dataset in logged.inputs.dataset_inputs} == {
        "bitmoji-train",
        "bitmoji-val",
    }


def test_an_error_in_the_child_is_raised_here_and_the_run_ends_failed(mlflow_store: str):
    with (
        MlflowProcess(EXPERIMENT) as process,
        pytest.raises(ValueError, match="lists_dir or datasets"),
        process.run(run_name="no-lists", selection=BEST_ON_VAL) as run,
    ):
        run.log_start(params={}, tags={}, manifest={})
    assert the_run(mlflow_store).info.status == "FAILED"


def test_a_store_that_cannot_be_opened_fails_at_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/mlflow.db")
    with (
        MlflowProcess(EXPERIMENT) as process,
        pytest.raises(BitmojiError, match="cannot use the MLflow tracking store"),
    ):
        process.ready()


def wait_for_status(uri: str, wanted: str) -> str:
    deadline = time.monotonic() + TIMEOUT
    while (status := the_run(uri).info.status) != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    return status


@pytest.mark.slow
def test_ctrl_c_of_the_process_group_ends_the_run_as_killed(
    tmp_path: Path, tiny_dataset_template: Path, mlflow_store_template: Path
):
    with training_process(tmp_path, tiny_dataset_template, mlflow_store_template) as (process, uri, _):
        wait_for_line(process, r"epoch +2/500")
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: parent and child
        rest, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, rest
    assert "Traceback" not in rest
    assert the_run(uri).info.status == "KILLED"


@pytest.mark.slow
def test_a_parent_killed_without_a_word_leaves_its_run_failed_not_running(
    tmp_path: Path, tiny_dataset_template: Path, mlflow_store_template: Path
):
    with training_process(tmp_path, tiny_dataset_template, mlflow_store_template) as (process, uri, _):
        wait_for_line(process, r"epoch +2/500")
        process.kill()  # the parent alone: the child sees its pipe close
        process.wait(timeout=TIMEOUT)
        assert wait_for_status(uri, "FAILED") == "FAILED"


def test_the_child_imports_this_project_even_behind_another_copy_on_the_path(
    mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A loaded MLflow pyfunc model puts its code folder, with a partial bitmoji_ml, first on
    sys.path; the spawned child must still import this project's modules."""
    from bitmoji_ml.serving.image_model_registry import copy_model_code

    partial = copy_model_code(tmp_path / "code")  # what the image model carries
    monkeypatch.syspath_prepend(str(partial.parent))
    with MlflowProcess(EXPERIMENT) as process:
        assert process.ready().uri == mlflow_store


def test_tracking_functions_run_in_the_child_and_their_messages_are_logged_here(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_store_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
):
    built = trained_store(tmp_path_factory, mlflow_store_template)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", built.uri)
    caplog.set_level("INFO", logger="bitmoji_ml")
    find = "bitmoji_ml.tracking.ranking:export_checkpoint"
    arguments = {"run_id": None, "experiment": TRAINED_EXPERIMENT, "lists_dir": built.lists}
    here = on_store(Store.open(built.uri), find, **arguments, folder=tmp_path / "here")
    caplog.clear()
    with MlflowProcess() as process:
        assert process.ready().experiment_id == ""  # none asked for, none made
        path, run_id, description = on_store(process, find, **arguments, folder=tmp_path / "child")
        assert (run_id, description) == here[1:]
        assert path.read_bytes() == here[0].read_bytes()
        assert f"run {run_id}, step" in caplog.text  # logged by ranking.py in the child
        with pytest.raises(BitmojiError, match="no-such-experiment"):
            on_store(process, find, **{**arguments, "experiment": "no-such-experiment"}, folder=tmp_path)
        with pytest.raises(ValueError, match="not a function of this project"):
            process.apply("os:system", "true")
        assert on_store(process, "bitmoji_ml.tracking.evaluations:training_lists", "0" * 32) is None


MAIN_SCRIPT = """
import sys
from pathlib import Path

if __name__ != "__main__":  # run again by a spawned child, as __mp_main__
    Path(sys.argv[1]).write_text(__name__)
else:
    from bitmoji_ml.tracking.mlflow_process import MlflowProcess

    with MlflowProcess() as process:
        print(process.ready().uri)
"""


def test_the_child_does_not_run_the_main_script_again(mlflow_store: str, tmp_path: Path):
    """multiprocessing's spawn runs the parent's main script in the child first: for `bitmoji`,
    typer and every command module, on the child's way to the store."""
    script, marker = tmp_path / "main.py", tmp_path / "ran-again"
    script.write_text(MAIN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(script), str(marker)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == mlflow_store
    assert not marker.exists(), f"the child ran the script as {marker.read_text()}"
