"""`bitmoji serve`: the registered image model behind MLflow's scoring server (`mlflow models
serve --env-manager local`) on loopback, with readiness, a ready-to-paste curl line and the same
stop discipline as `bitmoji ui` (Ctrl-C, SIGTERM and SIGHUP stop the whole process group)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bitmoji_ml import paths
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.inference_pyfunc import CONFIG_ENV
from bitmoji_ml.tracking import check_port_free, start_server, stop_process_group, tracking_uri

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_MODEL_URI = f"models:/{paths.REGISTERED_MODEL}@champion"
# MLflow's scoring server has no request-size limit of its own: the model refuses (HTTP 400)
# requests over these, passed through its settings variable.
SERVE_LIMITS = {"max_request_rows": 1024, "max_request_bytes": 32 * 2**20}
READY_SECONDS = 120


def serve_command(*, model_uri: str, port: int, workers: int) -> list[str]:
    """The `mlflow models serve` command line, loopback only, in this environment."""
    if workers < 1:
        raise BitmojiError("--workers must be at least 1")
    return [
        *(sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri),
        *("--env-manager", "local", "-h", HOST, "-p", str(port), "-w", str(workers)),
    ]


def serve_environment(*, limits: dict[str, int] | None = None) -> dict[str, str]:
    """This environment plus: the venv's bin first on PATH (MLflow runs `uvicorn` by name), the
    project's tracking store (for models:/ URIs) and the model's request limits."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MLFLOW_TRACKING_URI"] = tracking_uri()
    env[CONFIG_ENV] = json.dumps(SERVE_LIMITS if limits is None else limits)
    return env


def curl_line(port: int, image: str = "face.jpg") -> str:
    """A ready-to-paste request scoring one image file."""
    body = f'{{"dataframe_split": {{"columns": ["image"], "data": [["\'"$(base64 -w0 {image})"\'"]]}}}}'
    return f"curl -s http://{HOST}:{port}/invocations -H 'Content-Type: application/json' -d '{body}'"


def wait_until_ready(process: subprocess.Popen, port: int, timeout: float = READY_SECONDS) -> None:
    """Return once /ping answers 200; BitmojiError if the server exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BitmojiError(
                f"the model server exited with code {process.returncode} (see its messages above)"
            )
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(f"http://{HOST}:{port}/ping", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    raise BitmojiError(f"the model server did not answer on port {port} within {timeout:.0f}s")


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of the group exists but is no longer ours to signal
        return True
    return True


def stop_server(process: subprocess.Popen, timeout: float = 15) -> None:
    """Stop the server's whole process group. `stop_process_group` waits for the group leader
    only; a uvicorn worker that outlives it still holds the port, so wait for every member,
    then SIGKILL whatever is left."""
    stop_process_group(process, timeout=timeout)
    deadline = time.monotonic() + timeout
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _raise_interrupt(signal_number: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signal_number).name)


@contextlib.contextmanager
def stop_signals_interrupt():
    """SIGTERM and SIGHUP act like Ctrl-C while serving (the server has its own session, so only
    we get them and must stop it); the previous handlers come back afterwards."""
    previous = {number: signal.signal(number, _raise_interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def serve_model(*, model_uri: str, port: int, workers: int) -> int | None:
    """Serve until the server exits (its exit code) or Ctrl-C / SIGTERM / SIGHUP (None)."""
    command = serve_command(model_uri=model_uri, port=port, workers=workers)
    check_port_free(port)
    logger.info("starting the model server for %s on http://%s:%d ...", model_uri, HOST, port)
    with stop_signals_interrupt():
        process = start_server(command, env=serve_environment())
        try:
            wait_until_ready(process, port)
            logger.info("serving %s on http://%s:%d  (Ctrl-C to stop). Try:", model_uri, HOST, port)
            logger.info("%s", curl_line(port))
            return process.wait()
        except KeyboardInterrupt:
            return None
        finally:
            stop_server(process)
