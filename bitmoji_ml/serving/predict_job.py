"""`bitmoji predict`'s job: a folder of images (or, for Ray, a URI) through the exported ONNX
model, into a CSV / Kaggle submission (engine `plain`) or a Parquet dataset (engine `ray`).

Both engines read the same files: the folder's image files, with its sub-folders only under
`recursive` (a URI, which Ray always reads with its sub-folders, needs `recursive` said). An
unreadable file is never a prediction: both engines warn once per file and count it as skipped,
`strict` makes either write nothing; the CSV leaves it out (its columns are the submission's),
the Parquet dataset keeps its row with the error and no probability. An option an engine does
not use is refused, naming it, rather than ignored.

Imports neither torch nor mlflow, and Ray only for engine `ray`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from bitmoji_ml import paths
from bitmoji_ml.data.classes import Classes
from bitmoji_ml.errors import BitmojiError

logger = logging.getLogger(__name__)

ENGINES = ("plain", "ray")
PARQUET_OUTPUT = paths.PREDICTIONS_CSV.with_suffix(".parquet")


@dataclasses.dataclass(frozen=True)
class PredictResult:
    """What a predict run wrote: `rows` rows to `output` (a `kind` of csv, kaggle or parquet),
    `predicted` images with a prediction (`counts`: how many of each of the model's `classes`)
    and the (file, why) of every file that could not be read."""

    engine: str
    output: str
    kind: str
    rows: int
    predicted: int
    counts: dict[str, int]  # predicted images per class name, in the classes' order
    skipped: list[tuple[str, str]]
    seconds: float
    classes: Classes

    def share(self, name: str) -> float:
        """The share of the predicted images predicted as class `name`."""
        return self.counts.get(name, 0) / self.predicted if self.predicted else 0.0


def class_counts(classes: Classes, indices) -> dict[str, int]:
    """Predicted images per class name, from their predicted class indices."""
    found = np.bincount(np.asarray(indices, dtype=np.int64), minlength=len(classes))
    return {name: int(count) for name, count in zip(classes.names, found, strict=True)}


def refuse_unused_options(
    engine: str,
    *,
    kaggle: bool,
    template: Path | None,
    threads: int,
    ray_address: str | None,
    actors: int,
) -> None:
    """A BitmojiError naming the first option that `engine` would otherwise silently ignore."""
    if engine not in ENGINES:
        raise BitmojiError(f"unknown --engine {engine!r}: use plain or ray")
    if engine == "ray":
        for given, flag in ((kaggle, "--kaggle"), (template is not None, "--template")):
            if given:
                raise BitmojiError(
                    f"{flag} writes a Kaggle CSV, which --engine ray does not: use --engine plain"
                )
        if threads:
            raise BitmojiError("--threads is the plain engine's: --engine ray scales with --actors")
        return
    if template is not None and not kaggle:
        raise BitmojiError("--template is the Kaggle submission's template: it needs --kaggle")
    for given, flag in ((ray_address is not None, "--ray-address"), (actors != 1, "--actors")):
        if given:
            raise BitmojiError(f"{flag} is for --engine ray; the plain engine uses --threads")


def predict_job(
    source: str | Path,
    *,
    model: Path = paths.ONNX_MODEL,
    output: str | Path | None = None,
    engine: str = "plain",
    batch_size: int | None = None,
    threads: int = 0,
    recursive: bool = False,
    kaggle: bool = False,
    template: Path | None = None,
    strict: bool = False,
    ray_address: str | None = None,
    actors: int = 1,
    num_cpus: int | None = None,
) -> PredictResult:
    """Predict every image file of `source`; see the module docstring for the rules both
    engines share. `output` defaults to predictions.csv (plain) or predictions.parquet (ray)."""
    from bitmoji_ml.serving.folder_engine import PREDICT_BATCH

    refuse_unused_options(
        engine, kaggle=kaggle, template=template, threads=threads, ray_address=ray_address, actors=actors
    )
    batch_size = PREDICT_BATCH if batch_size is None else batch_size
    if batch_size < 1:
        raise BitmojiError("--batch-size must be at least 1")
    if engine == "ray":
        return _predict_ray(
            str(source),
            model=model,
            output=str(output or PARQUET_OUTPUT),
            batch_size=batch_size,
            recursive=recursive,
            strict=strict,
            address=ray_address,
            actors=actors,
            num_cpus=num_cpus,
        )
    return _predict_plain(
        Path(source),
        model=model,
        output=Path(output or paths.PREDICTIONS_CSV),
        batch_size=batch_size,
        threads=threads,
        recursive=recursive,
        template=(template or Path(source).resolve().parent / "sample_submission.csv") if kaggle else None,
        strict=strict,
    )


def _predict_plain(
    folder: Path,
    *,
    model: Path,
    output: Path,
    batch_size: int,
    threads: int,
    recursive: bool,
    template: Path | None,
    strict: bool,
) -> PredictResult:
    """The folder on this machine's threads; `template` given: a Kaggle submission."""
    from bitmoji_ml.console import progress
    from bitmoji_ml.data.classes import predicted_indices
    from bitmoji_ml.files import write_text_atomic
    from bitmoji_ml.serving.folder_engine import (
        find_images,
        kaggle_csv,
        kaggle_refusal,
        predict_paths,
        predictions_csv,
    )
    from bitmoji_ml.serving.onnx_model import OnnxModel

    # Each thread decodes a batch and runs a one-thread onnxruntime pass on it: `threads` busy
    # cores and no stage waiting on another (measured faster than a decode pool feeding one
    # inference thread, which the network's CPU time bounds).
    threads = threads or os.cpu_count() or 1
    onnx_model = OnnxModel.load(model, 1)
    if template and not onnx_model.classes.kaggle:
        raise BitmojiError(kaggle_refusal(onnx_model.classes))
    images = find_images(folder, recursive)

    def warn(path: Path, message: str) -> None:
        logger.warning("skipped %s", message)

    with progress("predicting", total=len(images)) as advance:
        result = predict_paths(onnx_model, images, batch_size, threads, on_skip=warn, on_batch=advance)
    if not result.paths:
        raise BitmojiError(f"none of the {len(images)} image file(s) in {folder} could be read")
    if strict and result.skipped:
        raise BitmojiError(
            f"--strict: {len(result.skipped)} file(s) could not be read; {output} was not written"
        )
    text = kaggle_csv(result, folder, template) if template else predictions_csv(result, folder)
    write_text_atomic(output, text)
    return PredictResult(
        engine="plain",
        output=str(output),
        kind="kaggle" if template else "csv",
        rows=text.count("\n") - 1 if template else len(result.paths),  # a submission: the template's ids
        predicted=len(result.paths),
        counts=class_counts(result.classes, predicted_indices(result.probabilities)),
        skipped=[(str(path), message) for path, message in result.skipped],
        seconds=result.seconds,
        classes=result.classes,
    )


def ray_files(source: str, recursive: bool) -> str | list[str]:
    """What Ray reads: a local folder's image files as the plain engine finds them, or a URI,
    which Ray always reads with its sub-folders (so it needs `recursive`)."""
    from bitmoji_ml.serving.folder_engine import find_images

    if "://" in source:
        if not recursive:
            raise BitmojiError(
                f"Ray reads {source} with all its sub-folders: pass --recursive to say so "
                "(a local folder is read without them unless --recursive)"
            )
        return source
    return [str(path.absolute()) for path in find_images(source, recursive)]


def _predict_ray(
    source: str,
    *,
    model: Path,
    output: str,
    batch_size: int,
    recursive: bool,
    strict: bool,
    address: str | None,
    actors: int,
    num_cpus: int | None,
) -> PredictResult:
    from bitmoji_ml.serving.ray_engine import predict_with_ray

    result = predict_with_ray(
        files=ray_files(source, recursive),
        model=model,
        output=output,
        address=address,
        actors=actors,
        batch_size=batch_size,
        num_cpus=num_cpus,
        strict=strict,
    )
    return PredictResult(
        engine="ray",
        output=result.output,
        kind="parquet",
        rows=result.rows,
        predicted=result.rows - len(result.skipped),
        counts=result.counts,
        skipped=result.skipped,
        seconds=result.seconds,
        classes=result.classes,
    )
