"""Local servers the CLI runs in the foreground: the MLflow UI, the model server, torchrun.

A server command runs in its own process group on 127.0.0.1 until it exits. Whatever stops
`bitmoji` (Ctrl-C, SIGTERM from a supervisor or `kill`, SIGHUP from a closed terminal) stops the
whole group, workers included, so nothing is left behind holding the port. The server has its
own session, so only `bitmoji` receives those signals and decides how the group is stopped.
No MLflow import: the commands are plain command lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from bitmoji_ml.errors import BitmojiError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
STOP_TIMEOUT = 15.0  # seconds for a graceful stop before SIGKILL
POLL_SECONDS = 0.1
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
REMOTE_SCHEMES = ("http://", "https://", "databricks")


@dataclasses.dataclass(frozen=True)
class ServerExit:
    """How a foreground server ended: its exit code, and the signal that stopped it (if any)."""

    code: int | None
    stopped_by: str | None = None


def local_url(port: int) -> str:
    """The server's address on the loopback interface."""
    return f"http://{HOST}:{port}"


def wait_until_answering(process: subprocess.Popen, *, url: str, what: str, timeout: float) -> None:
    """Return once `url` answers 200; BitmojiError if `process` exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BitmojiError(f"{what} exited with code {process.returncode} (see its messages above)")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    raise BitmojiError(f"{what} did not answer {url} within {timeout:.0f}s")


UI_APP = "bitmoji-ui"  # the mlflow.app entry point in pyproject.toml


def mlflow_ui_command(*, uri: str, artifact_root: str | None, port: int) -> list[str]:
    """The `mlflow ui` command line for a local store, on loopback only."""
    if uri.startswith(REMOTE_SCHEMES):
        raise BitmojiError(f"the tracking store {uri} is already a server: open it in a browser")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    if artifact_root:  # experiments made in the UI then keep artifacts where `train` puts them
        command += ["--default-artifact-root", artifact_root]
    # One worker: a single local user, and it starts much faster than the default four. The
    # app plugin keeps the UI in model-training mode (serving/ui_app.py).
    return command + ["--host", HOST, "--port", str(port), "--workers", "1", "--app-name", UI_APP]


def runs_page_url(*, port: int, experiment_id: str) -> str:
    """The MLflow UI page of an experiment's runs table. Without `workflowType` a fresh browser
    opens MLflow 3's GenAI overview instead."""
    return f"{local_url(port)}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def check_port_free(*, port: int, host: str = HOST) -> None:
    """Fail with advice, before starting anything, when the port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers do: connections closed a moment ago (TIME_WAIT) do not block the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise BitmojiError(f"port {port} on {host} is in use: pass --port with a free one") from error


def start_process_group(command: list[str], **popen_options: Any) -> subprocess.Popen:
    """Start `command` in a new session (and so a new process group whose id is its pid)."""
    return subprocess.Popen(command, start_new_session=True, **popen_options)


def _signal_group(group: int, number: int) -> bool:
    """Send `number` to every process of `group`; False when the group is empty."""
    try:
        os.killpg(group, number)
    except ProcessLookupError:
        return False
    return True


def _wait_until_empty(group: int, deadline: float) -> bool:
    while _signal_group(group, 0):  # signal 0 only asks whether anyone is left
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def stop_process_group(process: subprocess.Popen, *, timeout: float = STOP_TIMEOUT) -> None:
    """Stop a process started by `start_process_group` and everything in its group: SIGTERM,
    then SIGKILL for whatever is still there after `timeout` seconds."""
    group = process.pid
    deadline = time.monotonic() + timeout
    _signal_group(group, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    if _wait_until_empty(group, deadline):
        return
    logger.warning(f"process group {group} ignored SIGTERM for {timeout:.0f}s: killing it")
    _signal_group(group, signal.SIGKILL)
    process.wait()
    _wait_until_empty(group, time.monotonic() + timeout)


class _StopRequested(Exception):
    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.number = number


class _StopSignals:
    """The stop-signal handler of one run_in_foreground call. It raises _StopRequested at most
    once, for the first signal; every later signal is only recorded, so the stop (and the
    clean-up after any end) cannot be cut short or escape as a traceback. While `raising` is
    off the first signal is only recorded; `resume` raises it then, once the caller holds
    what it must clean up."""

    def __init__(self) -> None:
        self.raising = True
        self.received: int | None = None

    def handler(self, number: int, frame: object) -> None:
        if self.received is None:
            self.received = number
        if self.raising:
            self.raising = False
            raise _StopRequested(self.received)

    def defer(self) -> None:
        self.raising = False

    def resume(self) -> None:
        """Raise the signal that came while deferred, if one did; else raise the next one."""
        self.raising = True  # first, so a signal from here on is raised by the handler...
        if self.received is not None and self.raising:  # ...and one before is raised here, once
            self.raising = False
            raise _StopRequested(self.received)

    def shield(self) -> None:
        """From now on, signals are only recorded (idempotent)."""
        self.raising = False


def run_in_foreground(
    command: list[str], *, on_started: Callable[[subprocess.Popen], None] | None = None, **popen_options: Any
) -> ServerExit:
    """Run `command` in its own process group until it exits, or until Ctrl-C, SIGTERM or
    SIGHUP reaches this process: then the whole group is stopped. `on_started(process)` runs
    once it is started (e.g. to wait until it answers); if it raises, the group is stopped too.
    Call from the main thread.

    No signal can leave the group running: one that arrives while the process is being started
    is held until `process` is assigned, and the clean-up runs shielded (later signals are
    recorded, not raised), so it always finishes and never ends in a traceback."""
    stops = _StopSignals()
    previous = {number: signal.signal(number, stops.handler) for number in STOP_SIGNALS}
    process: subprocess.Popen | None = None
    stopped_by: str | None = None
    try:
        try:
            try:
                stops.defer()  # a signal during the fork is raised once `process` is assigned
                process = start_process_group(command, **popen_options)
                stops.resume()
                if on_started is not None:
                    on_started(process)
                process.wait()
            finally:
                stops.shield()
        except _StopRequested as stop:  # raised at most once, so nothing can interrupt this
            stopped_by = signal.Signals(stop.number).name
    finally:
        stops.shield()
        try:
            if process is not None:  # idempotent: an empty group returns at once
                stop_process_group(process)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
    return ServerExit(None if process is None else process.returncode, stopped_by)
