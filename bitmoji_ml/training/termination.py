"""SIGTERM as Ctrl-C: torchrun's way of stopping the other workers when one has failed, and a
plain `kill` of `bitmoji train`, `cv` or `tune`. The run ends as KILLED with its last checkpoint
whole (a checkpoint being written finishes first) and `train --resume --run-id ID` continues it."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM reached this worker. A KeyboardInterrupt, so the run ends as KILLED (the
    last checkpoint is intact and resumes)."""


@dataclasses.dataclass
class _TerminationGuard:
    deferring: bool = False
    pending: bool = False


_guard = _TerminationGuard()


def on_sigterm(number: int, frame: object) -> None:
    if sys.exc_info()[0] is not None:
        return  # already failing (e.g. a peer died): let the run end as FAILED, uninterrupted
    if _guard.deferring:
        _guard.pending = True
        return
    raise Terminated("SIGTERM")


@contextlib.contextmanager
def sigterm_ends_run() -> Iterator[None]:
    """In a single process too (`bitmoji train`, `cv`, `tune`): SIGTERM raises Terminated, so the
    MLflow run ends as KILLED with its last checkpoint whole, as Ctrl-C does. Outside the main
    thread (where no handler can be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


@contextlib.contextmanager
def termination_deferred() -> Iterator[None]:
    """Hold SIGTERM until the block is done: a checkpoint being written and logged stays whole."""
    _guard.deferring, _guard.pending = True, False
    try:
        yield
    finally:
        _guard.deferring = False
    if _guard.pending:
        raise Terminated("SIGTERM")
