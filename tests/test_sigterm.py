"""Defect d: `kill -TERM` of a single-process `bitmoji train` ends its MLflow run as KILLED with
last.pt whole and resumable, as Ctrl-C does (it used to stay RUNNING forever)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, copy_store
from mlflow import MlflowClient

from bitmoji_ml.checkpoints import read_checkpoint
from bitmoji_ml.data.dataset import load_dataset
from bitmoji_ml.data.lists import write_lists

pytestmark = pytest.mark.slow
TIMEOUT = 240
FLAGS = ["--batch-size", "8", "--image-size", "32", "--threads", "1", "--model", "compact"]


def environment(uri: str) -> dict[str, str]:
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": python_path}


def wait_for_line(process: subprocess.Popen, pattern: str) -> str:
    """Read the process's output until a line matches `pattern` (bounded by TIMEOUT)."""
    deadline, seen = time.monotonic() + TIMEOUT, []
    for line in process.stdout:
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError(f"exited before {pattern!r}:\n{''.join(seen)}")


@contextlib.contextmanager
def training_process(
    tmp_path: Path, dataset_template: Path, store_template: Path
) -> Iterator[tuple[subprocess.Popen, str, list[str]]]:
    """`bitmoji train --epochs 500` on tiny lists, in its own process group and a fresh store:
    (the process, the store's URI, the command); the whole group is killed at the end."""
    lists = tmp_path / "lists"
    write_lists(load_dataset(dataset_template), lists, val_fraction=0.25, seed=0)
    uri = copy_store(store_template, tmp_path)
    command = [
        sys.executable,
        str(ROOT / "cli.py"),
        "train",
        "--epochs",
        "500",
        "--lists",
        str(lists),
        *FLAGS,
    ]
    process = subprocess.Popen(
        command,
        env=environment(uri),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process, uri, command
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def test_sigterm_ends_a_single_process_run_as_killed_and_it_resumes(
    tmp_path: Path, tiny_dataset_template: Path, mlflow_store_template: Path
):
    with training_process(tmp_path, tiny_dataset_template, mlflow_store_template) as (process, uri, command):
        wait_for_line(process, r"epoch +2/500")
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, rest
    assert "Traceback" not in rest
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("bitmoji-gender").experiment_id])
    assert run.info.status == "KILLED"
    last = read_checkpoint(client.download_artifacts(run.info.run_id, "checkpoints/last.pt", str(tmp_path)))
    assert last["epoch"] >= 2
    done = last["epoch"]
    resumed = subprocess.run(
        [*command[:3], "--resume", "--run-id", run.info.run_id, "--epochs", str(done + 1), *command[5:]],
        env=environment(uri),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming run {run.info.run_id} after epoch {done}" in resumed.stdout
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
