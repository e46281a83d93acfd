"""A real `mlflow server` on a loopback port over a store with two short runs, asked through its
REST API; a real `bitmoji ui` stopped by a signal, which must leave no server process behind;
and the `bitmoji ui` command line and links, checked without starting a server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from trained_store import EXPERIMENT, trained_store
from typer.testing import CliRunner

import cli
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import DEFAULT_MODEL
from bitmoji_ml.serving import mlflow_ui
from bitmoji_ml.serving import processes as serving
from bitmoji_ml.serving.ui_app import DEFAULT_MODE_SCRIPT
from bitmoji_ml.tracking.names import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, evaluation_experiment
from bitmoji_ml.tracking.store import artifact_root

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
STARTUP_SECONDS = 60
STOP_SECONDS = 60


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


@pytest.mark.slow
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
        process = serving.start_process_group(command, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
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
                assert params["model"] == DEFAULT_MODEL and params["epochs"] == "1"
                assert {"best_val_acc", "best_val_loss", "val_acc", "train_seconds"} <= set(metrics)
                assert tags["model"] == DEFAULT_MODEL
                batch_sizes.append(params["batch_size"])
                history = call(port, "metrics/get-history", query={"run_id": run_id, "metric_key": "val_acc"})
                assert [point["step"] for point in history["metrics"]] == [1]
                assert history["metrics"][0]["value"] == pytest.approx(metrics["val_acc"])
            assert batch_sizes == ["16", "8"]
        finally:
            serving.stop_process_group(process, timeout=15)
    assert process.returncode is not None
    with socket.socket() as client:
        assert client.connect_ex((HOST, port)) != 0, "something still listens after the stop"
    serving.check_port_free(port=port)  # and `bitmoji ui` could start there right away


def processes() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, process group); zombies excluded."""
    listed = subprocess.run(
        ["ps", "-e", "-o", "pid=,ppid=,pgid=,stat="], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    found = {}
    for line in listed.splitlines():
        pid, ppid, pgid, stat = line.split()[:4]
        if not stat.startswith("Z"):
            found[int(pid)] = (int(ppid), int(pgid))
    return found


def descendants(root: int, table: dict[int, tuple[int, int]]) -> set[int]:
    """The processes of `table` (from `processes()`) started, directly or not, by `root`."""
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


def wait_for_ui(process: subprocess.Popen, port: int, log: Path) -> None:
    """Return once the UI answers /health; fail if `bitmoji ui` exits or takes too long."""
    url = f"{serving.local_url(port)}/health"
    try:
        serving.wait_until_answering(process, url=url, what="bitmoji ui", timeout=STARTUP_SECONDS)
    except BitmojiError as error:
        pytest.fail(f"{error}:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_ui_stopped_by_a_signal_leaves_no_server_process_and_frees_the_port(
    stop: signal.Signals, mlflow_store: str, tmp_path: Path
):
    port = free_port()
    log = tmp_path / "ui.log"
    groups: set[int] = set()
    with open(log, "w") as output:
        ui = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "ui", "--port", str(port)],
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_ui(ui, port, log)
            # One snapshot for both: a short-lived child may be gone by a second `ps`.
            table = processes()
            started = descendants(ui.pid, table)
            groups = {table[pid][1] for pid in started} - {ui.pid}
            assert started and groups, "bitmoji ui started no server process of its own"
            ui.send_signal(stop)
            assert ui.wait(timeout=STOP_SECONDS) == 0, log.read_text()[-3000:]
            left = {pid for pid, (_, group) in processes().items() if pid in started or group in groups}
            assert not left, f"server processes left after {stop.name}: {sorted(left)}"
            assert f"stopped the MLflow UI ({stop.name})" in log.read_text()
        finally:  # never leak a server, even when the test fails
            kill_groups(ui, groups)
    serving.check_port_free(port=port)


def kill_groups(ui: subprocess.Popen, groups: set[int]) -> None:
    """SIGKILL `bitmoji ui`'s own group and the server `groups` it started, then reap it."""
    for group in groups | {ui.pid}:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    ui.wait(timeout=STOP_SECONDS)


def test_ui_command_line_for_the_sqlite_store():
    uri = "sqlite:////tmp/store/mlflow.db"
    command = serving.mlflow_ui_command(uri=uri, artifact_root=artifact_root(uri), port=5001)
    assert command[:4] == [sys.executable, "-m", "mlflow", "ui"]
    options = dict(zip(command[4::2], command[5::2], strict=True))
    assert options == {
        "--backend-store-uri": "sqlite:////tmp/store/mlflow.db",
        "--default-artifact-root": "file:///tmp/store/artifacts",
        "--host": "127.0.0.1",
        "--port": "5001",
        "--workers": "1",
        "--app-name": "bitmoji-ui",  # the plugin that keeps the UI in model-training mode
    }
    with pytest.raises(BitmojiError, match="already a server"):
        serving.mlflow_ui_command(uri="http://127.0.0.1:5000", artifact_root=None, port=5001)


def ui_scripts() -> list[Path]:
    """The MLflow UI's main JavaScript bundle(s) as installed."""
    return sorted(
        (Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js").glob("main.*.js")
    )


def test_ui_links_open_the_runs_tables_of_training_and_evaluation_runs(mlflow_store: str, monkeypatch):
    client = MlflowClient(tracking_uri=mlflow_store)
    training_id = client.create_experiment(EXPERIMENT)
    evaluations_id = client.create_experiment(evaluation_experiment(EXPERIMENT))
    started = []

    def fake_server(command, *, on_started, env):  # as if the page answered at once, then Ctrl-C
        started.append((command, env))
        on_started(None)
        return serving.ServerExit(None, "SIGINT")

    monkeypatch.setattr(mlflow_ui, "run_in_foreground", fake_server)
    monkeypatch.setattr(mlflow_ui, "wait_until_answering", lambda *args, **kwargs: None)
    port = free_port()
    result = CliRunner().invoke(cli.app, ["ui", "--port", str(port), "--experiment", EXPERIMENT])
    assert result.exit_code == 0, result.output
    for experiment_id in (training_id, evaluations_id):
        url = f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        assert url in result.output.split()
        # Opened by `bitmoji ui`, an experiment made elsewhere says it is model training too.
        assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    command, env = started[0]
    assert command[-6:] == ["--port", str(port), "--workers", "1", "--app-name", "bitmoji-ui"]
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"  # no job runner, no queue workers
    assert "stopped the MLflow UI (SIGINT)" in result.output
    # The installed UI routes that address: an experiment's runs tab, and the ML (not GenAI) view.
    bundle = "".join(path.read_text() for path in ui_scripts())
    assert '"/experiments/:experimentId/runs"' in bundle
    assert '"workflowType"' in bundle and 'MACHINE_LEARNING="machine_learning"' in bundle
    # ... and reads the experiment type from the tag the tool sets.
    assert f'"{EXPERIMENT_KIND_TAG}"' in bundle and f'"{MODEL_TRAINING_KIND}"' in bundle


def late_server(port: int, delay: float) -> list[str]:
    """A stand-in server: answers 200 on 127.0.0.1:`port` only after `delay` seconds."""
    code = (
        "import http.server, time\n"
        f"time.sleep({delay})\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()"
    )
    return [sys.executable, "-c", code]


def test_ui_prints_its_links_only_once_the_page_answers(mlflow_store: str, monkeypatch, tmp_path: Path):
    port, answered = free_port(), []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mlflow_ui, "mlflow_ui_command", lambda **_: late_server(port, 1.5))

    def on_ready() -> None:  # the page must answer at the moment the links are printed...
        with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=5) as response:
            answered.append(response.status)
        os.kill(os.getpid(), signal.SIGTERM)  # ...then stop, as a supervisor would

    stopped = mlflow_ui.run_ui(
        store_uri=mlflow_store, artifact_root=None, port=port, on_ready=on_ready, timeout=60
    )
    assert answered == [200] and stopped.stopped_by == "SIGTERM"
    serving.check_port_free(port=port)  # the whole group was stopped


def test_ui_that_exits_or_never_answers_is_an_error(mlflow_store: str, monkeypatch):
    port, ready = free_port(), []
    exits = [sys.executable, "-c", "raise SystemExit(3)"]
    monkeypatch.setattr(mlflow_ui, "mlflow_ui_command", lambda **_: exits)
    with pytest.raises(BitmojiError, match="the MLflow UI exited with code 3"):
        mlflow_ui.run_ui(
            store_uri=mlflow_store, artifact_root=None, port=port, on_ready=lambda: ready.append(1)
        )
    monkeypatch.setattr(mlflow_ui, "mlflow_ui_command", lambda **_: late_server(port, 600))
    with pytest.raises(BitmojiError, match="did not answer .* within 2s"):
        mlflow_ui.run_ui(
            store_uri=mlflow_store, artifact_root=None, port=port, on_ready=ready.append, timeout=2
        )
    assert not ready
    serving.check_port_free(port=port)  # the server that never answered was stopped


def start_ui(port: int, cwd: Path, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "ui", "--port", str(port)],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_links(ui: subprocess.Popen, log: Path) -> None:
    """Return once `bitmoji ui` printed its links; fail if it exits or takes too long."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while "(Ctrl-C to stop)" not in log.read_text():
        if ui.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"bitmoji ui printed no links:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.mark.slow
def test_ui_answers_when_it_says_so_runs_as_2_processes_and_fails_when_the_server_dies(
    mlflow_store: str, tmp_path: Path
):
    port, log = free_port(), tmp_path / "ui.log"
    groups: set[int] = set()
    with open(log, "w") as output:
        ui = start_ui(port, tmp_path, output)
        try:
            wait_for_links(ui, log)
            with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=5) as response:
                assert response.status == 200  # no "connection refused" on the first click
                page = response.read()
            assert DEFAULT_MODE_SCRIPT in page and page.count(b"<script") > 1  # MLflow's page, plus ours
            table = processes()
            server = descendants(ui.pid, table)
            groups = {table[pid][1] for pid in server} - {ui.pid}
            assert len(server) == 2, f"{len(server)} server processes: job execution is on?"
            (group,) = groups
            leaf = max(server, key=lambda pid: pid != group)  # uvicorn, under `mlflow ui`
            os.kill(leaf, signal.SIGKILL)  # the server dies; `mlflow ui` itself then exits 0
            assert ui.wait(timeout=STOP_SECONDS) == 1, log.read_text()[-3000:]
            assert "the MLflow UI server stopped on its own" in log.read_text()
            assert not {pid for pid in processes() if pid in server}
        finally:  # never leak a server, even when the test fails
            kill_groups(ui, groups)
    serving.check_port_free(port=port)


def test_ui_refuses_a_busy_port(mlflow_store: str):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = CliRunner().invoke(cli.app, ["ui", "--port", str(taken)])
    assert result.exit_code == 1
    assert f"port {taken} on 127.0.0.1 is in use" in result.output
