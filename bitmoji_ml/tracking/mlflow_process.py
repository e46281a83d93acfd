"""MLflow on the second core: `MlflowProcess`, a child process that owns the tracking store.

Importing MLflow and opening the store take about two seconds of one core, as long as
importing torch. Started first, the child spends them on the second core while this process
imports torch (or onnxruntime), decodes images and builds the model. Then it makes the calls
this process sends it, one at a time, each answered before the next:
- `bitmoji train`: the run (`run(...)`) and each logging call of the training loop, so a
  checkpoint is never rewritten while it is being logged;
- `evaluate` and `export-onnx`: functions of this project's tracking code that take the store
  first (`apply`, or `on_store`, which makes the same call on a `Store` in this process).
An error in the child is raised where the call was made. What crosses back is built from
`tracking/records.py` and other MLflow-free classes, so this process never imports MLflow.

Ctrl-C and SIGTERM reach the whole process group. The child ignores them: this process ends
the run (FINISHED, FAILED or KILLED) by telling it. If this process dies without a word, the
child sees its pipe close, ends a run still open as FAILED and exits.
"""

from __future__ import annotations

import contextlib
import importlib
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
# `preload` for `bitmoji train`: what a training run's first calls use (the run, its datasets as
# pandas-backed MLflow datasets). Not matplotlib, for the plots at the end: imported before the
# run, it delays the first epoch by the 0.3 s train waits for it; imported while the first epoch
# trains, it slows that epoch by 0.4-0.5 s (a third busy thread on two cores); imported by the
# call that draws the plots, it costs about 0.4 s there and the first epoch line comes soonest.
TRAINING_RUN_MODULES = (
    "mlflow.data.pandas_dataset",
    "bitmoji_ml.tracking.datasets",
    "bitmoji_ml.tracking.runs",
)


class MlflowProcess:
    """The child that owns the MLflow store. `uri` and `experiment_id` (of `experiment`, found or
    made; none without one) are known once `ready()` returned; `run(...)` is a training run, as a
    context manager; `apply(...)` one call of a tracking function."""

    def __init__(
        self, experiment: str | None = None, *, preload: tuple[str, ...] = (), uri: str | None = None
    ) -> None:
        """`preload`: modules the child imports once the store is open, before any call comes
        (what the first calls need, so that they answer at once)."""
        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has threads
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=serve, args=(child_end, uri, experiment, preload), name="bitmoji-mlflow", daemon=True
        )
        with this_project_first_on_path(), main_script_hidden():
            self._process.start()
        child_end.close()
        self.uri = ""
        self.experiment_id = ""

    def ready(self) -> MlflowProcess:
        """Wait until the child has opened the store and found (or made) the experiment; its
        error (e.g. a store that cannot be opened) is raised here."""
        if not self.uri:
            self.uri, self.experiment_id = self.call("ready")
        return self

    def apply(self, function: str, *args: Any, **kwargs: Any) -> Any:
        """`function` ("module:name", a function of this project whose first parameter is the
        store) called by the child on its store with these arguments."""
        return self.ready().call("apply", function, args, kwargs)

    def run(self, *, run_name: str, selection: str) -> ChildRun:
        """A new run, made by the child when the returned object is entered."""
        return ChildRun(self.ready(), run_name=run_name, selection=selection)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method` of the child's side (`ChildSide`) with these arguments; its result, or its
        exception raised here."""
        try:
            self._connection.send((method, args, kwargs))
            outcome, value, messages = self._connection.recv()
        except (EOFError, OSError):
            self._process.join(1.0)
            raise BitmojiError(
                f"the process that logs to MLflow stopped (exit code {self._process.exitcode}); "
                "its messages above say why"
            ) from None
        for name, level, message in messages:  # what the call logged, as if logged here
            logging.getLogger(name).log(level, "%s", message)
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

    def __enter__(self) -> MlflowProcess:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()


def mlflow_process_when(
    needed: bool, experiment: str | None = None, *, preload: tuple[str, ...] = ()
) -> contextlib.AbstractContextManager[MlflowProcess | None]:
    """An MlflowProcess to use in a with-statement when the command `needed` MLflow, else None."""
    return MlflowProcess(experiment, preload=preload) if needed else contextlib.nullcontext()


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


@contextlib.contextmanager
def main_script_hidden() -> Iterator[None]:
    """A spawned child runs this process's main script again (as `__mp_main__`) before its
    target, unless `__main__` names no file or module, as in an interactive session. The
    child's target is `serve`, here, which needs nothing of the script: for `bitmoji` that
    import is typer and the command modules, a quarter of a second on the child's way to the
    store."""
    main = sys.modules["__main__"]
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update(saved)


class ChildRun:
    """What the training loop logs to (the `TrainingRun` interface): every call is made by the
    child on its TrainingRun."""

    def __init__(self, process: MlflowProcess, **run_args: Any) -> None:
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

    def __init__(self, uri: str | None, experiment: str | None, preload: tuple[str, ...]) -> None:
        from bitmoji_ml.tracking.store import Store

        self.failure: Exception | None = None
        self.store: Any = None
        self.experiment_id = ""
        self.run: Any = None
        try:
            self.store = Store.open(uri)
            self.experiment_id = self.store.experiment_id(experiment) if experiment else ""
        except Exception as error:  # raised in the parent at `ready`
            self.failure = error
        for module in preload:
            importlib.import_module(module)

    def ready(self) -> tuple[str, str]:
        if self.failure is not None:
            raise self.failure
        return self.store.uri, self.experiment_id

    def apply(self, function: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        return project_function(function)(self.store, *args, **kwargs)

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


def on_store(store: Any, function: str, *args: Any, **kwargs: Any) -> Any:
    """`function` ("module:name", taking the store first) with these arguments, on `store`: an
    `MlflowProcess` makes the call in its child, a `tracking.store.Store` here."""
    if isinstance(store, MlflowProcess):
        return store.apply(function, *args, **kwargs)
    return project_function(function)(store, *args, **kwargs)


def project_function(function: str) -> Any:
    """The function "module:name" names; only this project's modules are looked in."""
    module, _, name = function.partition(":")
    if not module.startswith("bitmoji_ml.") or not name:
        raise ValueError(f"{function!r} is not a function of this project (module:name)")
    return getattr(importlib.import_module(module), name)


def serve(connection: Connection, uri: str | None, experiment: str | None, preload: tuple[str, ...]) -> None:
    """The child's loop: answer each message until the run has ended or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    messages = forward_messages()
    side = ChildSide(uri, experiment, preload)
    while True:
        try:
            method, args, kwargs = connection.recv()
        except (EOFError, OSError):  # the parent closed the pipe, or died
            if side.run is not None:
                side.exit(Exception)
            break
        try:
            answer = ("result", getattr(side, method)(*args, **kwargs))
        except Exception as error:
            answer = ("error", picklable(error))
        connection.send((*answer, messages.take()))
        if method == "exit":  # the run has ended
            break
    # Every call was answered, so every write is committed: exit without MLflow's exit handlers
    # (its telemetry), which take a second.
    connection.close()
    os._exit(0)


class Messages(logging.Handler):
    """In the child: what this project's loggers say during a call, sent back with its answer
    so that the parent's handlers print it (or a test captures it) as if logged there."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))

    def take(self) -> list[tuple[str, int, str]]:
        taken, self.records = self.records, []
        return taken


def forward_messages() -> Messages:
    """Collect every message of this project's loggers in the child (the parent filters them)."""
    from bitmoji_ml.console import PACKAGE_LOGGER

    handler = Messages()
    package = logging.getLogger(PACKAGE_LOGGER)
    package.addHandler(handler)
    package.setLevel(logging.DEBUG)
    package.propagate = False
    return handler


def picklable(error: Exception) -> Exception:
    """`error` if it crosses the pipe, else a BitmojiError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return BitmojiError(f"{type(error).__name__}: {error}")
    return error
