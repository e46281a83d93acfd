"""serving.processes.run_in_foreground under signals that arrive at the worst moments, made
deterministic by sending them from inside the patched start and stop (os.kill to this process
runs the Python handler before os.kill returns): a signal between the fork and the assignment
still stops the child, and a signal during the clean-up neither cuts it short nor escapes as a
traceback. The child is a sleeping Python process in its own group; every test kills its group
whatever happens."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

import pytest

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.serving import processes

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def gone_soon(group: int, seconds: float = 5.0) -> bool:
    """The group emptied (a killed child may take a moment to be reaped by its waiter)."""
    deadline = time.monotonic() + seconds
    while group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not group_alive(group)


@pytest.fixture
def started(monkeypatch):
    """The groups run_in_foreground started; any still alive at the end is killed."""
    groups: list[int] = []
    start = processes.start_process_group

    def recording(command, **options):
        process = start(command, **options)
        groups.append(process.pid)
        return process

    monkeypatch.setattr(processes, "start_process_group", recording)
    yield groups
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


@pytest.fixture
def handlers_restored():
    before = {number: signal.getsignal(number) for number in processes.STOP_SIGNALS}
    yield
    assert {number: signal.getsignal(number) for number in processes.STOP_SIGNALS} == before


def test_a_signal_between_fork_and_assignment_still_stops_the_child(started, monkeypatch, handlers_restored):
    recording = processes.start_process_group

    def signalled_right_after_the_fork(command, **options):
        process = recording(command, **options)  # the child runs...
        os.kill(os.getpid(), signal.SIGTERM)  # ...and the stop arrives before `process` is assigned
        return process

    monkeypatch.setattr(processes, "start_process_group", signalled_right_after_the_fork)
    ended = processes.run_in_foreground(SLEEPER)
    assert ended.stopped_by == "SIGTERM"
    assert started and gone_soon(started[0]), "the child outlived the stop"


def test_a_signal_during_the_clean_up_after_an_error_does_not_escape(started, monkeypatch, handlers_restored):
    stop = processes.stop_process_group
    stops: list[int] = []

    def interrupted_stop(process, **options):
        stops.append(process.pid)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the group is being stopped
        stop(process, **options)

    def not_ready(process) -> None:
        raise BitmojiError("the server did not answer")

    monkeypatch.setattr(processes, "stop_process_group", interrupted_stop)
    with pytest.raises(BitmojiError, match="did not answer"):
        processes.run_in_foreground(SLEEPER, on_started=not_ready)
    assert stops == started and gone_soon(started[0])


def test_a_second_signal_during_the_stop_is_recorded_not_raised(started, monkeypatch, handlers_restored):
    stop = processes.stop_process_group

    def interrupted_stop(process, **options):
        os.kill(os.getpid(), signal.SIGHUP)
        stop(process, **options)

    def stopped_once_ready(process) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(processes, "stop_process_group", interrupted_stop)
    ended = processes.run_in_foreground(SLEEPER, on_started=stopped_once_ready)
    assert ended.stopped_by == "SIGTERM" and ended.code == -signal.SIGTERM
    assert gone_soon(started[0])


def test_a_server_that_exits_by_itself_reports_its_code(started, handlers_restored):
    ended = processes.run_in_foreground([sys.executable, "-c", "raise SystemExit(3)"])
    assert ended == processes.ServerExit(3, None)
