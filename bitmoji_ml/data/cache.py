"""Decode a list of images once into one uint8 array (N, size, size, 3), optionally kept on disk."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bitmoji_ml.console import track
from bitmoji_ml.data.images import Preprocess, decode_image
from bitmoji_ml.files import atomic_path


def decode_all(
    paths: Sequence[Path], spec: Preprocess, workers: int | None = None, description: str = "decoding"
) -> np.ndarray:
    """Decode `paths` in a thread pool (PIL releases the GIL while decoding), in order, with a
    progress bar on a terminal."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    images = np.empty((len(paths), spec.size, spec.size, 3), dtype=np.uint8)

    def decode_into(index: int) -> None:
        images[index] = decode_image(paths[index], spec)

    with ThreadPoolExecutor(workers) as pool:
        for _ in track(pool.map(decode_into, range(len(paths))), description, total=len(paths)):
            pass
    return images


def cache_key(paths: Sequence[Path], spec: Preprocess) -> str:
    """Digest of the list contents, the files' sizes and times, and the preprocessing."""
    digest = hashlib.sha256(repr(sorted(spec.to_dict().items())).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def load_list(
    list_path: Path, spec: Preprocess, cache_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """A labelled list from `prepare`, decoded: (images, labels as int64, paths)."""
    from bitmoji_ml.data.lists import read_list

    entries = read_list(list_path)
    paths = [path for path, _ in entries]
    labels = np.array([label for _, label in entries], dtype=np.int64)
    return load_images(paths, spec, cache_dir), labels, paths


def load_images(paths: Sequence[Path], spec: Preprocess, cache_dir: Path | None = None) -> np.ndarray:
    """Decoded images for `paths`; read from / written to `cache_dir` when one is given."""
    if cache_dir is None:
        return decode_all(paths, spec)
    cached = Path(cache_dir) / f"{cache_key(paths, spec)}.npy"
    if cached.is_file():
        images = np.load(cached, allow_pickle=False)
        if images.shape == (len(paths), spec.size, spec.size, 3) and images.dtype == np.uint8:
            return images
    images = decode_all(paths, spec)
    with atomic_path(cached) as tmp, open(tmp, "wb") as handle:
        np.save(handle, images, allow_pickle=False)
    return images
