"""A real `mlflow server` on a loopback port over a store with two short runs, asked through its
REST API; and the `bitmoji ui` command line, built and checked without starting a server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from trained_store import EXPERIMENT, trained_store
from typer.testing import CliRunner

import cli
from bitmoji_ml import tracking
from bitmoji_ml.errors import BitmojiError

HOST = "127.0.0.1"
STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def call(port: int, endpoint: str, body: dict | None = None, query: dict | None = None) -> dict:
    url = f"http://{HOST}:{port}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_until_answering(process: subprocess.Popen, port: int, log: Path) -> dict:
    """The experiment, as soon as the server answers; fail if it dies or takes too long."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return call(port, "experiments/get-by-name", query={"experiment_name": EXPERIMENT})["experiment"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer within {STARTUP_SECONDS}s:\n{log.read_text()[-3000:]}")


def as_dict(entries: list[dict]) -> dict[str, str]:
    return {entry["key"]: entry["value"] for entry in entries}


def test_live_server_serves_the_runs_params_and_metric_history(
    tmp_path_factory, mlflow_store_template, tmp_path: Path
):
    store = trained_store(tmp_path_factory, mlflow_store_template)
    port = free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.uri),
        *("--default-artifact-root", (tmp_path / "artifacts").as_uri(), "--no-serve-artifacts"),
        *("--host", HOST, "--port", str(port), "--workers", "1"),
    ]
    log = tmp_path / "server.log"
    with open(log, "w") as output:
        process = tracking.start_server(command, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
        try:
            experiment = wait_until_answering(process, port, log)
            found = call(port, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
            by_id = {run["info"]["run_id"]: run for run in found}
            assert set(store.run_ids) <= set(by_id)
            batch_sizes = []
            for run_id in store.run_ids:
                data = by_id[run_id]["data"]
                params, metrics, tags = (
                    as_dict(data["params"]),
                    as_dict(data["metrics"]),
                    as_dict(data["tags"]),
                )
                assert params["model"] == "separable" and params["epochs"] == "1"
                assert {"best_val_acc", "best_val_loss", "val_acc", "train_seconds"} <= set(metrics)
                assert tags["model"] == "separable"
                batch_sizes.append(params["batch_size"])
                history = call(port, "metrics/get-history", query={"run_id": run_id, "metric_key": "val_acc"})
                assert [point["step"] for point in history["metrics"]] == [1]
                assert history["metrics"][0]["value"] == pytest.approx(metrics["val_acc"])
            assert batch_sizes == ["16", "8"]
        finally:
            tracking.stop_process_group(process, timeout=15)
    assert process.returncode is not None
    with socket.socket() as client:
        assert client.connect_ex((HOST, port)) != 0, "something still listens after the stop"
    tracking.check_port_free(port)  # and `bitmoji ui` could start there right away


def test_ui_command_line_for_the_sqlite_store():
    command = tracking.ui_command(5001, "sqlite:////tmp/store/mlflow.db")
    assert command[:4] == [sys.executable, "-m", "mlflow", "ui"]
    options = dict(zip(command[4::2], command[5::2], strict=True))
    assert options == {
        "--backend-store-uri": "sqlite:////tmp/store/mlflow.db",
        "--default-artifact-root": "file:///tmp/store/artifacts",
        "--host": "127.0.0.1",
        "--port": "5001",
        "--workers": "1",
    }
    with pytest.raises(BitmojiError, match="already a server"):
        tracking.ui_command(5001, "http://127.0.0.1:5000")


def test_ui_prints_the_experiment_link_and_refuses_a_busy_port(
    tmp_path_factory, mlflow_store_template, monkeypatch
):
    store = trained_store(tmp_path_factory, mlflow_store_template)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    started = []
    monkeypatch.setattr(tracking, "serve_ui", lambda command: started.append(command))
    port = free_port()
    result = CliRunner().invoke(cli.app, ["ui", "--port", str(port), "--experiment", EXPERIMENT])
    assert result.exit_code == 0, result.output
    experiment_id = tracking.experiment_id_or_error(EXPERIMENT)
    assert f"http://127.0.0.1:{port}/#/experiments/{experiment_id}" in result.output
    assert started and started[0][-4:] == ["--port", str(port), "--workers", "1"]

    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = CliRunner().invoke(cli.app, ["ui", "--port", str(taken)])
    assert result.exit_code == 1
    assert f"port {taken} on 127.0.0.1 is in use" in result.output
