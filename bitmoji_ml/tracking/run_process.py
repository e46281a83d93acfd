"""The MLflow side of `bitmoji train` in a child process: `RunProcess`.

Importing MLflow and opening the store take about two seconds of one core, as long as
importing torch. Started first, the child spends them on the second core while this process
imports torch, decodes the images and builds the model. Then the child creates the run and
makes each logging call the training loop reports. Each call waits for the child's answer, so
a checkpoint is never rewritten while it is being logged and an error is raised where the call
was made.

Ctrl-C and SIGTERM reach the whole process group. The child ignores them: this process ends
the run (FINISHED, FAILED or KILLED) by telling it. If this process dies without a word, the
child sees its pipe close, ends the run as FAILED and exits.

Nothing here imports MLflow in this process; the child imports `tracking.runs` itself.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bitmoji_ml.errors import BitmojiError

logger = logging.getLogger(__name__)
JOIN_SECONDS = 30.0  # how long closing waits for the child to end the run and exit


class RunProcess:
    """The child that owns the MLflow store for one training run. `uri` and `experiment_id` are
    known once `ready()` returned; `run(...)` is the run, as a context manager."""

    def __init__(self, experiment: str, uri: str | None = None) -> None:
        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has threads
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=serve, args=(child_end, uri, experiment), name="bitmoji-mlflow", daemon=True
        )
        with this_project_first_on_path():
            self._process.start()
        child_end.close()
        self.uri = ""
        self.experiment_id = ""

    def ready(self) -> RunProcess:
        """Wait until the child has opened the store and found (or made) the experiment; its
        error (e.g. a store that cannot be opened) is raised here."""
        if not self.experiment_id:
            self.uri, self.experiment_id = self.call("ready")
        return self

    def run(self, *, run_name: str, selection: str) -> ChildRun:
        """A new run, made by the child when the returned object is entered."""
        return ChildRun(self.ready(), run_name=run_name, selection=selection)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method` of the child's side (`ChildSide`) with these arguments; its result, or its
        exception raised here."""
        try:
            self._connection.send((method, args, kwargs))
            outcome, value = self._connection.recv()
        except (EOFError, OSError):
            self._process.join(1.0)
            raise BitmojiError(
                f"the process that logs to MLflow stopped (exit code {self._process.exitcode}); "
                "its messages above say why"
            ) from None
        if outcome == "error":
            raise value
        return value

    def close(self) -> None:
        """Let the child finish and exit (it ends a run still open as FAILED)."""
        if self._process.is_alive():
            self._connection.close()  # the child reads end-of-file
            self._process.join(JOIN_SECONDS)
        if self._process.is_alive():
            logger.warning("the MLflow process did not exit in %.0f s: stopping it", JOIN_SECONDS)
            self._process.terminate()
            self._process.join()

    def __enter__(self) -> RunProcess:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()


@contextlib.contextmanager
def this_project_first_on_path() -> Iterator[None]:
    """The spawned child imports its modules afresh from the `sys.path` it is given: put the
    folder of the `bitmoji_ml` running here first, so that another copy on the path (e.g. the
    partial one a loaded MLflow pyfunc model adds with its code) is not the one it finds."""
    root = str(Path(__file__).resolve().parents[2])
    saved = list(sys.path)
    sys.path[:] = [root, *(entry for entry in saved if entry != root)]
    try:
        yield
    finally:
        sys.path[:] = saved


class ChildRun:
    """What the training loop logs to (the `TrainingRun` interface): every call is made by the
    child on its TrainingRun."""

    def __init__(self, process: RunProcess, **run_args: Any) -> None:
        self._process = process
        self._run_args = run_args
        self.run_id = ""

    def __enter__(self) -> ChildRun:
        self.run_id = self._process.call("enter", **self._run_args)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: object, traceback: object) -> None:
        # Only builtin classes cross the pipe: how the run ends depends on these two alone.
        ending = (
            None if kind is None else KeyboardInterrupt if issubclass(kind, KeyboardInterrupt) else Exception
        )
        self._process.call("exit", ending)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self._process.call(method, *args, **kwargs)


class ChildSide:
    """In the child: the store, and the run once entered. Each message names one method."""

    def __init__(self, uri: str | None, experiment: str) -> None:
        from bitmoji_ml.tracking.store import Store

        self.failure: Exception | None = None
        self.store: Any = None
        self.experiment_id = ""
        self.run: Any = None
        try:
            self.store = Store.open(uri)
            self.experiment_id = self.store.experiment_id(experiment)
        except Exception as error:  # raised in the parent at `ready`
            self.failure = error
        # While the parent still decodes and builds the model: what the run's first calls use
        # (the run, and its datasets as pandas-backed MLflow datasets), so that they answer at once.
        import mlflow.data.pandas_dataset  # noqa: F401

        from bitmoji_ml.tracking import datasets, runs  # noqa: F401

    def ready(self) -> tuple[str, str]:
        if self.failure is not None:
            raise self.failure
        return self.store.uri, self.experiment_id

    def enter(self, *, run_name: str, selection: str) -> str:
        from bitmoji_ml.tracking.runs import TrainingRun

        run = TrainingRun(
            self.store, experiment_id=self.experiment_id, run_name=run_name, selection=selection
        )
        self.run = run.__enter__()
        return self.run.run_id

    def exit(self, ending: type[BaseException] | None) -> None:
        run, self.run = self.run, None
        run.__exit__(ending, None, None)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_") or self.run is None:
            raise AttributeError(f"no run to call {method} on")
        return getattr(self.run, method)


def serve(connection: Connection, uri: str | None, experiment: str) -> None:
    """The child's loop: answer each message until the run has ended or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    side = ChildSide(uri, experiment)
    while True:
        try:
            method, args, kwargs = connection.recv()
        except (EOFError, OSError):  # the parent closed the pipe, or died
            if side.run is not None:
                side.exit(Exception)
            return
        try:
            connection.send(("result", getattr(side, method)(*args, **kwargs)))
        except Exception as error:
            connection.send(("error", picklable(error)))
        if method == "exit":  # the run has ended and every write is committed
            connection.close()
            os._exit(0)  # without MLflow's exit handlers (telemetry), which take a second


def picklable(error: Exception) -> Exception:
    """`error` if it crosses the pipe, else a BitmojiError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return BitmojiError(f"{type(error).__name__}: {error}")
    return error
