"""`bitmoji serve`: the real MLflow scoring server on a free loopback port answers base64 faces
with `bitmoji predict`'s probabilities, reports a corrupt file in its row, refuses oversized and
non-image requests with a 4xx and keeps serving; SIGTERM to `bitmoji serve` leaves no process."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from image_model_helpers import assert_rows_match, champion, face_files, reference_probabilities

from bitmoji_ml.serving import model_server
from bitmoji_ml.serving import processes as serving

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://{HOST}:{port}/invocations", data=body, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def images_request(values: list[bytes]) -> bytes:
    rows = [[base64.b64encode(value).decode()] for value in values]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


def assert_nothing_listens(port: int) -> None:
    with socket.socket() as client:
        assert client.connect_ex((HOST, port)) != 0, "something still listens after the stop"


@pytest.fixture
def served(tmp_path_factory, mlflow_store_template, monkeypatch, tmp_path: Path):
    """The @champion served on a free port with small request limits; stopped afterwards."""
    found = champion(tmp_path_factory, mlflow_store_template)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", found.uri)
    port = free_port()
    command = model_server.serve_command(model_uri=model_server.DEFAULT_MODEL_URI, port=port, workers=1)
    env = model_server.serve_environment(
        store_uri=found.uri, limits={"max_request_rows": 64, "max_request_bytes": 2**20}
    )
    log = tmp_path / "server.log"
    with open(log, "w") as output:
        process = serving.start_process_group(
            command, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            model_server.wait_until_ready(process, port, timeout=90)
            yield found, port
        except Exception:
            print(log.read_text()[-3000:])
            raise
        finally:
            serving.stop_process_group(process, timeout=15)
    group = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert not group, f"server processes left in its group: {group}"
    assert_nothing_listens(port)


def test_server_scores_faces_like_predict_and_refuses_bad_requests(served, tmp_path: Path):
    found, port = served
    files = face_files(tmp_path / "faces", 3, corrupt=1)
    status, text = post(port, images_request([f.read_bytes() for f in files]))
    assert status == 200, text
    rows = json.loads(text)["predictions"]
    prob = np.array([np.nan if row["prob_male"] is None else row["prob_male"] for row in rows])
    assert_rows_match(
        [f.name for f in files],
        prob,
        [row["error"] for row in rows],
        reference_probabilities(found.onnx, files),
    )

    face = files[0].read_bytes()
    status, text = post(port, images_request([face] * 65))
    assert status == 400 and "65 images is over the 64-image limit" in text
    status, text = post(port, images_request([os.urandom(3 * 2**19)] * 2))
    assert status == 400 and "over the 1,048,576-byte limit" in text
    status, text = post(port, face, content_type="image/jpeg")
    assert status == 415 and "content types" in text
    status, text = post(
        port, json.dumps({"dataframe_split": {"columns": ["image"], "data": [["%%%"]]}}).encode()
    )
    assert status == 200 and json.loads(text)["predictions"][0]["error"] == "empty image"  # nothing decodes
    status, text = post(
        port, json.dumps({"dataframe_split": {"columns": ["photo"], "data": [["eA=="]]}}).encode()
    )
    assert status == 400 and "image" in text, text[:500]
    status, text = post(port, b"GIF89a not json at all")
    assert status == 400 and "valid JSON" in text

    status, text = post(port, images_request([face]))  # still serving
    assert status == 200 and json.loads(text)["predictions"][0]["error"] == ""


def test_curl_line_is_a_working_request(served, tmp_path: Path):
    found, port = served
    (face,) = face_files(tmp_path / "faces", 1, corrupt=0)
    completed = subprocess.run(
        ["bash", "-c", model_server.curl_line(port, face.name)],
        cwd=face.parent,
        capture_output=True,
        text=True,
        timeout=30,
    )
    (row,) = json.loads(completed.stdout)["predictions"]
    assert (
        row["error"] == ""
        and abs(row["prob_male"] - reference_probabilities(found.onnx, [face])[face.name]) <= 1e-6
    )


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_bitmoji_serve_stops_its_whole_process_group(
    tmp_path_factory, mlflow_store_template, tmp_path: Path, stop
):
    found = champion(tmp_path_factory, mlflow_store_template)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": found.uri, "PYTHONPATH": str(Path(__file__).parent.parent)}
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        cli = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(port)],
            cwd=Path(__file__).parent.parent,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 90
            while "curl -s" not in log.read_text() and cli.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "curl -s" in log.read_text(), log.read_text()[-3000:]
            cli.send_signal(stop)
            assert cli.wait(timeout=30) == 0, log.read_text()[-3000:]
        finally:
            if cli.poll() is None:
                os.killpg(cli.pid, signal.SIGKILL)
    assert "stopped the model server" in log.read_text()
    assert_nothing_listens(port)
    leftover = subprocess.run(
        ["pgrep", "-f", f"--port {port}"], capture_output=True, text=True
    ).stdout.split()
    assert not leftover, f"server processes left: {leftover}"
