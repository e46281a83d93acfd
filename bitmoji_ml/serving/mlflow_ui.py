"""`bitmoji ui`: MLflow's UI server on the project's store, loopback only, lean and announced only
once its page answers.

- Lean: MLflow 3's server also starts a job runner and a pool of queue workers for server-side
  jobs (10 processes, ~2 GB); nothing here submits jobs, so they are switched off
  (`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`): 2 processes, the same runs table.
- Ready: the server takes 10-25 s to answer on a small machine; the URLs are given to
  `on_ready` only once the page answers 200, so a first click never gets "connection refused".
- Watched: the UI never ends on its own, so any exit that no stop signal asked for is an error.
No MLflow import: the server is a command line.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.serving.processes import (
    ServerExit,
    check_port_free,
    local_url,
    mlflow_ui_command,
    run_in_foreground,
    wait_until_answering,
)

JOB_EXECUTION_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
READY_SECONDS = 180.0  # 13 s idle, up to 25 s measured under load on 2 cores: a wide bound


def ui_environment() -> dict[str, str]:
    """This environment with MLflow's server-side job execution (runner + workers) off."""
    return {**os.environ, JOB_EXECUTION_ENV: "false"}


def run_ui(
    *,
    store_uri: str,
    artifact_root: str | None,
    port: int,
    on_ready: Callable[[], None],
    timeout: float = READY_SECONDS,
) -> ServerExit:
    """Run the MLflow UI until Ctrl-C / SIGTERM / SIGHUP stop its whole group; `on_ready()` runs
    once its page answers. BitmojiError when it does not answer within `timeout` seconds or
    when it exits without being asked to (its group is stopped either way)."""
    command = mlflow_ui_command(uri=store_uri, artifact_root=artifact_root, port=port)
    check_port_free(port=port)

    def announce_when_ready(process: subprocess.Popen) -> None:
        url = f"{local_url(port)}/"
        wait_until_answering(process, url=url, what="the MLflow UI", timeout=timeout)
        on_ready()

    stopped = run_in_foreground(command, on_started=announce_when_ready, env=ui_environment())
    if stopped.stopped_by is None:
        raise BitmojiError(
            f"the MLflow UI server stopped on its own (exit code {stopped.code}; see its messages above)"
        )
    return stopped
