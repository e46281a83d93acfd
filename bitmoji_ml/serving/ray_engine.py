"""`bitmoji predict SOURCE --engine ray`: Ray Data reads the image files (the listing of a
local folder, or any URI it reads), a pool of actors runs the project's decode and the ONNX
model (loaded once per actor, one onnxruntime thread each), and the rows go to a Parquet
dataset: path, the probability columns, the label column, error (Bitmoji: path, prob_male,
is_male, error; an unreadable file keeps its row, with its error and no prediction). Runs
locally (Ray starts itself) or on a cluster (`--ray-address auto` under `ray job submit`).
Imported only for `--engine ray`, so plain `bitmoji predict` never imports Ray."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.images import IMAGE_EXTENSIONS
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import swap_folder

logger = logging.getLogger(__name__)

# Measured on 2 cores: an actor pool holding every logical CPU starves Ray's read tasks (they
# queue forever), so each actor asks for half a CPU.
ACTOR_CPUS = 0.5
PATH_COLUMN = "path"


class OnnxActor:
    """One actor of the pool: loads the ONNX model once (from bytes, so cluster workers need no
    shared file system) and scores batches of Ray's binary-file rows."""

    def __init__(self, model_bytes: bytes) -> None:
        from bitmoji_ml.serving.onnx_model import OnnxModel

        with tempfile.TemporaryDirectory(prefix="bitmoji-ray-") as folder:
            path = Path(folder) / "model.onnx"
            path.write_bytes(model_bytes)
            self.model = OnnxModel.load(path, threads=1)  # one intra-op thread per actor

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from bitmoji_ml.serving.image_batch import predict_image_bytes

        # Arrow-backed binary columns become plain Python bytes.
        scored = predict_image_bytes(self.model, batch["bytes"].astype(object).tolist())
        scored.insert(0, PATH_COLUMN, batch["path"].astype(str).to_numpy())
        return scored


@dataclasses.dataclass(frozen=True)
class RayPrediction:
    """What `predict_with_ray` wrote: one row per image file, `counts` the predicted rows per
    class name, `skipped` the (path, error) of the rows without a prediction."""

    output: str
    rows: int
    counts: dict[str, int]
    skipped: list[tuple[str, str]]
    seconds: float
    classes: Classes


def label_counts(classes: Classes, labels: pd.Series) -> dict[str, int]:
    """Rows per class name, from the label column's values (a bad row's sentinel counts nowhere)."""
    values = classes.labels(np.eye(len(classes)))  # the label value of each class, in order
    return {name: int((labels == value).sum()) for name, value in zip(classes.names, values, strict=True)}


def _file_extensions() -> list[str]:
    """Image extensions in lower and upper case, as Ray matches them literally."""
    names = [extension.lstrip(".") for extension in IMAGE_EXTENSIONS]
    return names + [name.upper() for name in names]


def _start_ray(address: str | None, num_cpus: int | None) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def _score(*, files: str | list[str], model_bytes: bytes, actors: int, batch_size: int):
    """The scored rows, materialized: path, probabilities, label, error per file (small: the
    image bytes are dropped by the actors), so they can be counted before anything is written."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    extensions = _file_extensions() if isinstance(files, str) else None  # a listing is already filtered
    images = ray.data.read_binary_files(files, include_paths=True, file_extensions=extensions)
    scored = images.map_batches(
        OnnxActor,
        fn_constructor_kwargs={"model_bytes": model_bytes},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=ACTOR_CPUS,
        batch_size=batch_size,
        batch_format="pandas",
    )
    return scored.materialize()


def is_local(output: str) -> bool:
    return "://" not in output


def check_replaceable(output: Path) -> None:
    """Refuse, before any work, an existing `output` that is not a Parquet dataset: replacing it
    would delete a file or a folder of other files (the plain engine never replaces a folder)."""
    if not output.exists():
        return
    if not output.is_dir():
        raise BitmojiError(f"cannot write {output}: it is a file, not a Parquet dataset folder")
    others = sorted(entry.name for entry in output.iterdir() if entry.suffix != ".parquet")
    if others:
        shown = ", ".join(others[:5]) + (f" (and {len(others) - 5} more)" if len(others) > 5 else "")
        raise BitmojiError(
            f"cannot write {output}: it holds files that are not Parquet ({shown}) and replacing it "
            "would remove them; choose a new folder"
        )


def _write(scored, output: str) -> None:
    """A local output is written beside itself and renamed into place (an earlier dataset is
    replaced whole); a remote one is written where it is."""
    if not is_local(output):
        scored.write_parquet(output)
        return
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        scored.write_parquet(str(staging))
        swap_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def predict_with_ray(
    *,
    files: str | list[str],
    model: Path,
    output: str,
    address: str | None = None,
    actors: int = 1,
    batch_size: int = 256,
    num_cpus: int | None = None,
    strict: bool = False,
) -> RayPrediction:
    """Score `files` (a list of image files, or a URI Ray reads with its sub-folders) into the
    Parquet dataset `output`. The rows are counted before anything is written, so `strict` (any
    unreadable file) and "nothing readable" write nothing, local or remote. Ray is always shut
    down, and no temporary folder outlives the call."""
    import ray

    if actors < 1:
        raise BitmojiError("--actors must be at least 1")
    from bitmoji_ml.serving.onnx_model import OnnxModel

    classes = OnnxModel.load(model, threads=1).classes  # an unusable model fails here, before Ray starts
    if is_local(output):
        check_replaceable(Path(output))
    started = time.perf_counter()
    try:
        _start_ray(address, num_cpus)
        scored = _score(
            files=files, model_bytes=Path(model).read_bytes(), actors=actors, batch_size=batch_size
        )
        rows = scored.select_columns([PATH_COLUMN, classes.label_column, "error"]).to_pandas()
        skipped = [
            (path, error) for path, error in zip(rows[PATH_COLUMN], rows["error"], strict=True) if error
        ]
        for path, error in skipped:  # as the plain engine does, before a --strict refusal too
            logger.warning("skipped %s: %s", path, error)
        if len(rows) and len(skipped) == len(rows):
            raise BitmojiError(
                f"none of the {len(rows)} image file(s) could be read; {output} was not written"
            )
        if strict and skipped:
            raise BitmojiError(
                f"--strict: {len(skipped)} file(s) could not be read; {output} was not written"
            )
        _write(scored, output)
    finally:
        ray.shutdown()
    counts = label_counts(classes, rows[classes.label_column])
    return RayPrediction(output, len(rows), counts, skipped, time.perf_counter() - started, classes)
