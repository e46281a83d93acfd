"""`bitmoji serve`: the registered image model behind MLflow's scoring server (`mlflow models
serve --env-manager local`) on loopback, with readiness, a ready-to-paste curl line and the same
stop discipline as `bitmoji ui` (Ctrl-C, SIGTERM and SIGHUP stop the whole process group)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from bitmoji_ml import paths
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.serving import (
    HOST,
    ServerExit,
    check_port_free,
    local_url,
    run_in_foreground,
    wait_until_answering,
)
from bitmoji_ml.serving.image_model import CONFIG_ENV

logger = logging.getLogger(__name__)

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


def serve_environment(*, store_uri: str, limits: dict[str, int] | None = None) -> dict[str, str]:
    """This environment plus: the venv's bin first on PATH (MLflow runs `uvicorn` by name), the
    project's tracking store (for models:/ URIs) and the model's request limits."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MLFLOW_TRACKING_URI"] = store_uri
    env[CONFIG_ENV] = json.dumps(SERVE_LIMITS if limits is None else limits)
    return env


def curl_line(port: int, image: str = "face.jpg") -> str:
    """A ready-to-paste request scoring one image file."""
    body = f'{{"dataframe_split": {{"columns": ["image"], "data": [["\'"$(base64 -w0 {image})"\'"]]}}}}'
    return f"curl -s http://{HOST}:{port}/invocations -H 'Content-Type: application/json' -d '{body}'"


def wait_until_ready(process: subprocess.Popen, port: int, timeout: float = READY_SECONDS) -> None:
    """Return once /ping answers 200; BitmojiError if the server exits or takes too long."""
    wait_until_answering(process, url=f"{local_url(port)}/ping", what="the model server", timeout=timeout)


def serve_model(*, store_uri: str, model_uri: str, port: int, workers: int) -> ServerExit:
    """Serve until the server exits, or Ctrl-C / SIGTERM / SIGHUP stop its whole group."""
    command = serve_command(model_uri=model_uri, port=port, workers=workers)
    check_port_free(port=port)
    logger.info("starting the model server for %s on http://%s:%d ...", model_uri, HOST, port)

    def announce_when_ready(process: subprocess.Popen) -> None:
        wait_until_ready(process, port)
        logger.info("serving %s on http://%s:%d  (Ctrl-C to stop). Try:", model_uri, HOST, port)
        logger.info("%s", curl_line(port))

    return run_in_foreground(
        command, on_started=announce_when_ready, env=serve_environment(store_uri=store_uri)
    )
