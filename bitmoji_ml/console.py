"""How the library talks to a person: the standard `logging` module for messages, and rich
progress bars that only draw on a terminal.

Library modules call `logging.getLogger(__name__).info(...)`; `cli.py` calls
`configure_logging()` once, so messages print plainly (warnings to stderr) and tests or other
programs that import the library decide for themselves where messages go.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

PACKAGE_LOGGER = "bitmoji_ml"
Item = TypeVar("Item")


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def configure_logging(verbose: bool = False) -> None:
    """Info lines to stdout as plain text; warnings and errors to stderr as `warning: ...`."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    info = logging.StreamHandler(sys.stdout)
    info.setFormatter(logging.Formatter("%(message)s"))
    info.addFilter(_BelowWarning())
    problems = logging.StreamHandler(sys.stderr)
    problems.setLevel(logging.WARNING)
    problems.setFormatter(logging.Formatter("%(levelname_lower)s: %(message)s"))
    problems.addFilter(_lowercase_level)
    logger.addHandler(info)
    logger.addHandler(problems)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _lowercase_level(record: logging.LogRecord) -> bool:
    record.levelname_lower = record.levelname.lower()
    return True


def progress_enabled() -> bool:
    """Bars draw only for a person at a terminal (never in pipes, CI logs or tests)."""
    return sys.stderr.isatty()


@contextmanager
def progress(description: str, total: int | None) -> Iterator:
    """A transient rich progress bar on stderr; yields an `advance(n, **fields)` callable.

    Silent (a no-op callable) when stderr is not a terminal."""
    if not progress_enabled():
        yield lambda advance=1, **fields: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total, status="")

        def advance(advance: int = 1, **fields: object) -> None:
            status = "  ".join(f"{key} {value}" for key, value in fields.items())
            bar.update(task, advance=advance, status=status)

        yield advance


def track(items: Iterable[Item], description: str, total: int | None = None) -> Iterator[Item]:
    """Iterate `items` with a progress bar (see `progress`)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total) as advance:
        for item in items:
            yield item
            advance()
