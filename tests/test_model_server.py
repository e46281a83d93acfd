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
from image_model_helpers import CHAMPION_URI, assert_rows_match, champion, face_files, reference_probabilities
from trained_store import EXPERIMENT
from typer.testing import CliRunner

from bitmoji_ml.serving import model_server, scoring_app
from bitmoji_ml.serving import processes as serving
from bitmoji_ml.serving.processes import ServerExit

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
    command = model_server.serve_command(port=port, workers=1)
    env = model_server.serve_environment(
        store_uri=found.uri,
        model_uri=CHAMPION_URI,
        limits={"max_request_rows": 64, "max_request_bytes": 2**20},
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


def strict_json(text: str) -> dict:
    """Parse as a browser's JSON.parse would: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def post_raw(port: int, body: bytes, *, chunked: bool, chunk: int = 2**16) -> tuple[int, str]:
    """POST `body` over a plain socket, chunked (as a streaming client does), or with a
    Content-Length and `Expect: 100-continue` (as curl sends a large body): the body goes only
    after the server's 100, so a server that refuses by the headers answers without a race
    against a half-sent body (urllib could see a broken pipe instead of the 413)."""
    framing = (
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}\r\nExpect: 100-continue"
    )
    with socket.create_connection((HOST, port), timeout=30) as connection:
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"{framing}\r\nConnection: close\r\n\r\n"
        )
        connection.sendall(head.encode())
        answer = b""
        if not chunked:
            answer = connection.recv(65536)
            if not answer.startswith(b"HTTP/1.1 100"):  # refused by the headers: no body sent
                while data := connection.recv(65536):
                    answer += data
                status_line, _, rest = answer.partition(b"\r\n")
                return int(status_line.split()[1]), rest.decode(errors="replace")
            answer = b""
        try:
            for start in range(0, len(body), chunk):
                piece = body[start : start + chunk]
                connection.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            if chunked:
                connection.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent
        while data := connection.recv(65536):
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.decode(errors="replace")


@pytest.mark.slow
def test_server_scores_faces_like_predict_and_refuses_bad_requests(served, tmp_path: Path):
    found, port = served
    files = face_files(tmp_path / "faces", 3, corrupt=1)
    status, text = post(port, images_request([f.read_bytes() for f in files]))
    assert status == 200, text
    rows = strict_json(text)["predictions"]  # a bad row's prob_male is null, not NaN
    assert [row["prob_male"] is None for row in rows] == [bool(row["error"]) for row in rows]
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
    # Under the body limit (4/3 MiB + 1 MiB of JSON) but over 1 MiB of images: the model refuses.
    status, text = post(port, images_request([os.urandom(600 * 2**10)] * 2))
    assert status == 400 and "over the 1,048,576-byte limit" in text
    status, text = post(port, face, content_type="image/jpeg")
    assert status == 415 and "content types" in text
    status, text = post(
        port, json.dumps({"dataframe_split": {"columns": ["image"], "data": [["%%%"], [""]]}}).encode()
    )
    assert status == 200, text
    errors = [row["error"] for row in strict_json(text)["predictions"]]
    assert errors[0].startswith("not valid base64") and errors[1] == "empty image", errors
    status, text = post(
        port, json.dumps({"dataframe_split": {"columns": ["photo"], "data": [["eA=="]]}}).encode()
    )
    assert status == 400 and "image" in text, text[:500]
    status, text = post(port, b"GIF89a not json at all")
    assert status == 400 and "valid JSON" in text

    status, text = post(port, images_request([face]))  # still serving
    assert status == 200 and json.loads(text)["predictions"][0]["error"] == ""


@pytest.mark.slow
def test_server_refuses_an_oversized_body_before_parsing_it(served):
    """Over the body limit, by Content-Length or by the bytes a chunked client streams: 413
    from the wrapper, before MLflow parses anything (the model's 400 says 'bytes of images')."""
    _, port = served
    limit = scoring_app.body_limit(2**20)
    oversized = b'{"dataframe_split": {"columns": ["image"], "data": [["' + b"A" * limit + b'"]]}}'
    status, text = post_raw(port, oversized, chunked=False)
    assert status == 413 and f"over the {limit:,}-byte limit" in text and "bytes of images" not in text
    status, text = post_raw(port, oversized, chunked=True)
    assert status == 413 and f"more than {limit:,} bytes" in text, text[-500:]
    status, text = post(port, images_request([b"x"]))  # still serving
    assert status == 200, text


@pytest.mark.slow
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


@pytest.mark.slow
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
            [sys.executable, "-m", "cli", "serve", "--experiment", EXPERIMENT, "--port", str(port)],
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


# --------------------------------------------------------------------------------------------
# The body limit, driven through the ASGI interface (no server)


def drive(limit: int, messages: list[dict], headers: list[tuple[bytes, bytes]]) -> tuple[list, list, int]:
    """Run BodyLimit(limit) over one request made of `messages`; returns what the wrapped app
    received (None when it was not called), what was sent back, and how many messages were read."""
    import asyncio

    received: list = []
    sent: list = []
    read = 0

    async def receive() -> dict:
        nonlocal read
        read += 1
        return messages[read - 1] if read <= len(messages) else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope, app_receive, app_send) -> None:
        received.append(await app_receive())
        await app_send({"type": "http.response.start", "status": 200, "headers": []})

    scope = {"type": "http", "headers": headers}
    asyncio.run(scoring_app.BodyLimit(app, limit)(scope, receive, send))
    return received, sent, read


def chunks(*sizes: int, last_more: bool = False) -> list[dict]:
    return [
        {"type": "http.request", "body": b"x" * size, "more_body": index < len(sizes) - 1 or last_more}
        for index, size in enumerate(sizes)
    ]


def test_body_limit_refuses_by_content_length_without_reading():
    received, sent, read = drive(100, chunks(50, 60), [(b"content-length", b"110")])
    assert received == [] and read == 0
    assert sent[0]["status"] == 413 and b"110 bytes is over the 100-byte limit" in sent[1]["body"]


def test_body_limit_stops_reading_a_streamed_body_at_the_limit():
    received, sent, read = drive(100, chunks(60, 60, 60, 60), [])
    assert received == [] and read == 2  # the third and fourth chunks are never read
    assert sent[0]["status"] == 413 and b"more than 100 bytes" in sent[1]["body"]


def test_body_limit_replays_a_body_within_the_limit_whole():
    received, sent, _ = drive(100, chunks(40, 60), [(b"content-length", b"100")])
    assert received == [{"type": "http.request", "body": b"x" * 100, "more_body": False}]
    assert sent[0]["status"] == 200
    received, _, _ = drive(0, chunks(500), [])  # 0: no limit, the app reads for itself
    assert received[0]["body"] == b"x" * 500


def test_body_limit_covers_the_image_limit_in_base64():
    assert scoring_app.body_limit(0) == 0
    assert scoring_app.body_limit(3 * 2**20) == 4 * 2**20 + scoring_app.JSON_SLACK_BYTES


# --------------------------------------------------------------------------------------------
# Which model `bitmoji serve` serves: the experiment's registered model's @champion (no server)


@pytest.fixture
def started(monkeypatch) -> list[dict]:
    """What `bitmoji serve` would start: serve_model's arguments, recorded instead of a server."""
    calls: list[dict] = []
    monkeypatch.setattr(model_server, "serve_model", lambda **kwargs: calls.append(kwargs) or ServerExit(0))
    return calls


@pytest.mark.parametrize(
    ("arguments", "uri"),
    [
        ([], "models:/bitmoji-gender@champion"),
        (["--experiment", "digits"], "models:/digits@champion"),
        (["--model-uri", "models:/digits/3"], "models:/digits/3"),
    ],
)
def test_serve_serves_the_experiment_s_champion_unless_given_a_uri(started, arguments, uri):
    import cli

    result = CliRunner().invoke(cli.app, ["serve", *arguments])
    assert result.exit_code == 0, result.output
    assert [call["model_uri"] for call in started] == [uri]
    env = model_server.serve_environment(store_uri="sqlite:///x.db", model_uri=started[0]["model_uri"])
    assert env[scoring_app.MODEL_URI_ENV] == uri


def test_serve_refuses_an_experiment_and_a_model_uri_together(started):
    import cli

    result = CliRunner().invoke(cli.app, ["serve", "--experiment", "digits", "--model-uri", "models:/x/1"])
    assert result.exit_code == 1
    assert "give --model-uri or --experiment, not both" in result.output
    assert not started
