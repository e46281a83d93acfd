"""Atomic file writes: a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bitmoji_ml.errors import BitmojiError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths: list[str | Path]) -> Iterator[list[Path]]:
    """Temporary paths for several files, renamed into place together once all were written,
    so a failure part-way leaves every target as it was."""
    targets = [Path(path) for path in paths]
    temps: list[Path] = []
    try:
        try:
            for target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
                os.close(fd)
                temps.append(Path(name))
        except OSError as error:
            raise BitmojiError(f"cannot write {target}: {error.strerror or error}") from error
        yield temps
        try:
            for tmp, target in zip(temps, targets, strict=True):
                os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
                os.replace(tmp, target)
        except OSError as error:
            raise BitmojiError(f"cannot write {target}: {error.strerror or error}") from error
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def check_writable(path: str | Path) -> None:
    """Fail now, with a clear message, if `path` could not be written later (nothing is created)."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=f".{target.name}.", dir=target.parent):
            pass
    except OSError as error:
        raise BitmojiError(f"cannot write {target}: {error.strerror or error}") from error


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_files_atomic({path: text.encode("utf-8")})


def write_files_atomic(contents: dict[str | Path, bytes]) -> None:
    """Write each file fully and flush it to disk, then rename all of them into place."""
    with atomic_paths(list(contents)) as temps:
        for tmp, data in zip(temps, contents.values(), strict=True):
            try:
                with open(tmp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:
                raise BitmojiError(f"cannot write {tmp.parent}: {error.strerror or error}") from error
