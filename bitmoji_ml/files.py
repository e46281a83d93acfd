"""Atomic file writes: a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import shutil
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
    """Temporary paths for several files, renamed into place together once all were written:
    every target is checked before the block runs and again before the first rename, and if a
    rename fails the targets already replaced are put back, so a failure leaves every target
    as it was. (Only a crash of the process between two renames can leave a mix.)"""
    targets = [Path(path) for path in paths]
    temps: list[Path] = []
    try:
        try:
            for target in targets:
                _check_file_target(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
                os.close(fd)
                temps.append(Path(name))
        except OSError as error:
            raise BitmojiError(f"cannot write {target}: {error.strerror or error}") from error
        yield temps
        for target in targets:  # the block may have run for minutes: look again
            _check_file_target(target)
        _replace_all(temps, targets)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def _check_file_target(target: Path) -> None:
    if target.is_dir():
        raise BitmojiError(f"cannot write {target}: it is a folder, not a file")


def _replace_all(temps: list[Path], targets: list[Path]) -> None:
    """Rename each temporary file over its target. Each existing target is first hard-linked
    to a backup beside it (it stays in place, so a reader never finds it missing); if a rename
    fails, the targets already replaced get their backups back, and new ones are removed."""
    done: list[tuple[Path, Path | None]] = []  # (target, its backup, or None if it was new)
    try:
        for tmp, target in zip(temps, targets, strict=True):
            done.append((target, _backup(target)))
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
            os.replace(tmp, target)
    except OSError as error:
        _restore(done)
        unchanged = "; nothing was replaced" if len(targets) > 1 else ""
        raise BitmojiError(f"cannot write {target}: {error.strerror or error}{unchanged}") from error
    finally:
        for _, backup in done:
            if backup is not None:
                backup.unlink(missing_ok=True)


def _backup(target: Path) -> Path | None:
    """A hard link to `target` under a hidden temporary name beside it, or None if there is no
    `target` (a copy where the file system has no hard links)."""
    if not (target.exists() or target.is_symlink()):
        return None
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
    os.close(fd)
    backup = Path(name)
    backup.unlink()
    try:
        os.link(target, backup, follow_symlinks=False)
    except OSError:
        shutil.copy2(target, backup, follow_symlinks=False)
    return backup


def _restore(done: list[tuple[Path, Path | None]]) -> None:
    """Put back what `_replace_all` replaced, newest first."""
    for target, backup in reversed(done):
        if backup is not None:
            os.replace(backup, target)
        elif not target.is_dir():
            target.unlink(missing_ok=True)


def check_writable(path: str | Path) -> None:
    """Fail now, with a clear message, if `path` could not be written later (nothing is created)."""
    target = Path(path)
    _check_file_target(target)
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


def replace_folder_atomic(folder: str | Path, contents: dict[str, bytes]) -> None:
    """Make `folder` hold exactly `contents` (file name -> bytes) as one set: the files are
    written into a sibling temporary folder, then the folders are swapped by renames. The old
    folder is kept until the new one is in place and put back if the swap fails, so a reader
    sees the old set or the new set, never a mix of both. (A crash between the two renames
    leaves no `folder`, and the old set in a hidden `.NAME.old-*` sibling.)

    Refuses a folder that holds files of its own (it would be replaced with the set)."""
    given, folder = Path(folder), Path(folder).resolve()  # a symlinked folder: swap its target
    _check_replaceable(given, contents)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    except OSError as error:
        raise BitmojiError(f"cannot write {given}: {error.strerror or error}") from error
    old = staging.with_name(staging.name.replace(".new-", ".old-", 1))
    try:
        for name, data in contents.items():
            with open(staging / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual mode
        swap_folder(staging, folder, old)
    except OSError as error:
        raise BitmojiError(f"cannot write {given}: {error.strerror or error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap_folder(staging: Path, folder: Path, old: Path | None = None) -> None:
    """Rename the finished folder `staging` to `folder`. An existing `folder` (or file) is moved
    aside to `old` first and put back if the second rename fails, then deleted."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    old = old or folder.with_name(f".{folder.name}.old-{os.getpid()}")
    os.replace(folder, old)
    try:
        os.replace(staging, folder)
    except OSError:
        os.replace(old, folder)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _check_replaceable(folder: Path, contents: dict[str, bytes]) -> None:
    if folder.exists() and not folder.is_dir():
        raise BitmojiError(f"cannot write {folder}: it is a file, not a folder")
    if not folder.is_dir():
        return
    # Files this function wrote, and temporary files of the earlier file-by-file writes.
    others = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name not in contents and not fnmatch.fnmatch(entry.name, ".*.tmp")
    )
    if others:
        shown = ", ".join(others[:5]) + (f" (and {len(others) - 5} more)" if len(others) > 5 else "")
        raise BitmojiError(
            f"cannot write {folder}: it holds other files ({shown}) that replacing it would remove; "
            "choose a new or empty folder"
        )


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks (checkpoints and ONNX files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
