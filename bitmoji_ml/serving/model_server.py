"""`bitmoji serve`: the registered image model behind MLflow's scoring server (the app `mlflow
models serve` runs, wrapped by scoring_app.py with a request-body limit) under uvicorn on
loopback, with readiness, a ready-to-paste curl line and the same stop discipline as `bitmoji ui`
(Ctrl-C, SIGTERM and SIGHUP stop the whole process group)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.serving.image_model import CONFIG_ENV
from bitmoji_ml.serving.processes import (
    HOST,
    ServerExit,
    check_port_free,
    local_url,
    run_in_foreground,
    wait_until_answering,
)
from bitmoji_ml.serving.scoring_app import APP_FACTORY, MODEL_URI_ENV

logger = logging.getLogger(__name__)

# MLflow's scoring server has no request-size limit of its own. Passed through the model's
# settings variable: scoring_app refuses (413) a body too large for max_request_bytes before it
# is parsed, and the model refuses (400) a request over either limit before decoding an image.
SERVE_LIMITS = {"max_request_rows": 1024, "max_request_bytes": 32 * 2**20}
READY_SECONDS = 120


def serve_command(*, port: int, workers: int) -> list[str]:
    """The uvicorn command line serving scoring_app (the model comes from serve_environment),
    loopback only, in this environment."""
    if workers < 1:
        raise BitmojiError("--workers must be at least 1")
    return [
        *(sys.executable, "-m", "uvicorn", "--factory", APP_FACTORY),
        *("--host", HOST, "--port", str(port), "--workers", str(workers)),
    ]


def serve_environment(
    *, store_uri: str, model_uri: str, limits: dict[str, int] | None = None
) -> dict[str, str]:
    """This environment plus the model to serve, the project's tracking store (for models:/
    URIs) and the model's request limits."""
    env = dict(os.environ)
    env[MODEL_URI_ENV] = model_uri
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
    command = serve_command(port=port, workers=workers)
    check_port_free(port=port)
    logger.info("starting the model server for %s on http://%s:%d ...", model_uri, HOST, port)

    def announce_when_ready(process: subprocess.Popen) -> None:
        wait_until_ready(process, port)
        logger.info("serving %s on http://%s:%d  (Ctrl-C to stop). Try:", model_uri, HOST, port)
        logger.info("%s", curl_line(port))

    return run_in_foreground(
        command,
        on_started=announce_when_ready,
        env=serve_environment(store_uri=store_uri, model_uri=model_uri),
    )
