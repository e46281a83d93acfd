"""The folder-loop engine of `bitmoji predict`: a folder of image files through the ONNX model on
this machine's threads, into probabilities and the CSV or Kaggle submission text.

Imports numpy, pillow and onnxruntime only (never torch or mlflow), so it starts fast. The
preprocessing comes from the ONNX file's metadata and the same `decode_image` training used.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.images import IMAGE_EXTENSIONS, ImageError, Preprocess, decode_image
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.serving.onnx_model import OnnxModel

_T = TypeVar("_T")
# Images per inference batch of `bitmoji predict`. Each thread runs its own batch, so the
# activations of one batch per thread are alive at once: 64 kept peak RSS at about half of 256's
# (143 vs 290 MiB over 20,000 images) at the same images/s on 2 cores.
PREDICT_BATCH = 64


def find_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (extensions case-insensitive), sorted. Recursive mode follows
    symlinked folders but visits each real folder once, so link loops cannot hang it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BitmojiError(f"{folder} is not a folder of images")
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=recursive):
        stat = os.stat(root)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        found += [Path(root) / name for name in files if Path(name).suffix.lower() in IMAGE_EXTENSIONS]
        if not recursive:
            break
        dirs.sort()
    if not found:
        where = "under" if recursive else "in"
        raise BitmojiError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) {where} {folder}")
    return sorted(found)


@dataclasses.dataclass
class Predictions:
    """Results of one prediction pass, in input order (skipped files left out): (n, classes)
    probabilities, column i P(classes.names[i])."""

    paths: list[Path]
    probabilities: np.ndarray
    skipped: list[tuple[Path, str]]
    seconds: float
    classes: Classes


def _decode_batch(paths: list[Path], spec: Preprocess) -> tuple[np.ndarray, list[str | None]]:
    """Decoded images and, per path, the error that made it unusable (None when it decoded)."""
    images = np.empty((len(paths), spec.size, spec.size, 3), dtype=np.uint8)
    errors: list[str | None] = []
    for index, path in enumerate(paths):
        try:
            images[index] = decode_image(path, spec)
            errors.append(None)
        except ImageError as error:
            errors.append(str(error))
    return images, errors


def ordered_batches(
    paths: list[Path], batch_size: int, workers: int, work: Callable[..., _T], *args: object
) -> Iterator[tuple[list[Path], _T]]:
    """`work(chunk, *args)` for each `batch_size` chunk of `paths`, run in a pool of `workers`
    threads at most 2 x `workers` chunks ahead of the consumer (so memory stays flat on any
    number of files), yielded in order. The decoders and onnxruntime release the GIL, so the
    threads keep every core busy. On Ctrl-C, an error or an early stop of the consumer, chunks
    not yet started are cancelled instead of worked on."""
    pending: collections.deque[tuple[list[Path], Future]] = collections.deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="bitmoji-decode")
    try:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            pending.append((chunk, pool.submit(work, chunk, *args)))
            if len(pending) > 2 * workers:
                chunk_done, future = pending.popleft()
                yield chunk_done, future.result()
        while pending:
            chunk_done, future = pending.popleft()
            yield chunk_done, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _score_batch(paths: list[Path], model: OnnxModel) -> tuple[np.ndarray, list[str | None]]:
    """The probabilities of the paths that decoded, and each path's error (None when it decoded)."""
    images, errors = _decode_batch(paths, model.preprocess)
    good = np.array([error is None for error in errors])
    if not good.any():
        return np.zeros((0, len(model.classes)), dtype=np.float32), errors
    return model.predict(images if good.all() else images[good]), errors


def predict_paths(
    model: OnnxModel,
    paths: list[Path],
    batch_size: int = PREDICT_BATCH,
    workers: int = 0,
    on_skip: Callable[[Path, str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Predictions:
    """Run `model` over `paths`; unreadable files are skipped. Each of `workers` threads decodes
    a batch and runs the network on it, so no stage waits for another (with a one-thread
    onnxruntime session, `workers` threads use `workers` cores). `on_batch(n)` is called after
    each batch with its number of files (for a progress bar)."""
    if batch_size < 1:
        raise BitmojiError("--batch-size must be at least 1")
    started = time.perf_counter()
    kept: list[Path] = []
    probabilities: list[np.ndarray] = []
    skipped: list[tuple[Path, str]] = []
    workers = workers or (os.cpu_count() or 1)
    for chunk, (prob, errors) in ordered_batches(paths, batch_size, workers, _score_batch, model):
        for path, error in zip(chunk, errors, strict=True):
            if error is None:
                kept.append(path)
                continue
            skipped.append((path, error))
            if on_skip:
                on_skip(path, error)
        probabilities.append(prob)
        if on_batch:
            on_batch(len(chunk))
    empty = np.zeros((0, len(model.classes)), dtype=np.float32)
    prob = np.concatenate(probabilities) if probabilities else empty
    return Predictions(kept, prob, skipped, time.perf_counter() - started, model.classes)


def predictions_csv(predictions: Predictions, folder: Path) -> str:
    """`image_id`, the label column and the probability columns (Bitmoji: `image_id,is_male,
    prob_male`); image_id is the path relative to `folder`. Built column by column: the
    per-row work does not grow with the number of classes' Python objects."""
    classes, probabilities = predictions.classes, predictions.probabilities
    ids = [path.relative_to(folder).as_posix() for path in predictions.paths]
    values = classes.prob_values(probabilities).T.tolist()  # one list of floats per column
    columns = [[f"{value:.6f}" for value in column] for column in values]
    header = ["image_id", classes.label_column, *classes.prob_columns]
    return _csv_text(header, zip(ids, classes.labels(probabilities), *columns, strict=True))


def kaggle_csv(predictions: Predictions, folder: Path, template: Path) -> str:
    """`image_id,is_male` for exactly the ids of a sample_submission.csv, in its order (a
    Bitmoji model's only: the submission's labels are Kaggle's is_male)."""
    if not predictions.classes.kaggle:
        raise BitmojiError(kaggle_refusal(predictions.classes))
    if not template.is_file():
        raise BitmojiError(
            f"Kaggle template {template} not found: put sample_submission.csv beside the image "
            "folder or pass --template"
        )
    with open(template, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "image_id" not in reader.fieldnames:
            raise BitmojiError(f"{template} has no image_id column")
        ids = [row["image_id"] for row in reader]
    labels = predictions.classes.labels(predictions.probabilities)
    by_id = {
        path.relative_to(folder).as_posix(): label
        for path, label in zip(predictions.paths, labels, strict=True)
    }
    missing = [image_id for image_id in ids if image_id not in by_id]
    if missing:
        shown = ", ".join(missing[:10]) + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
        raise BitmojiError(f"{len(missing)} id(s) of {template.name} have no prediction: {shown}")
    return _csv_text(["image_id", "is_male"], [[image_id, by_id[image_id]] for image_id in ids])


def kaggle_refusal(classes: Classes) -> str:
    """Why a model of `classes` cannot write a Kaggle submission."""
    return (
        f"--kaggle writes the Bitmoji competition's submission (image_id,is_male); this model's classes "
        f"are {', '.join(classes.names)}: drop --kaggle to write a CSV with a label and prob_<class> columns"
    )


def _csv_text(header: list[str], rows: Iterable[Iterable[object]]) -> str:
    """CSV through the csv module: fields with commas, quotes or newlines are quoted."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()
