"""`bitmoji predict SOURCE --engine ray`: Ray Data reads the image files (any path or URI it
reads), a pool of actors runs the project's decode and the ONNX model (loaded once per actor,
one onnxruntime thread each), and the rows go to a Parquet dataset: path, prob_male, is_male,
error. Runs locally (Ray starts itself) or on a cluster (`--ray-address auto` under `ray job
submit`). Imported only for `--engine ray`, so plain `bitmoji predict` never imports Ray."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from bitmoji_ml.data.images import IMAGE_EXTENSIONS
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import swap_folder

logger = logging.getLogger(__name__)

# Measured on 2 cores: an actor pool holding every logical CPU starves Ray's read tasks (they
# queue forever), so each actor asks for half a CPU.
ACTOR_CPUS = 0.5
OUTPUT_COLUMNS = ["path", "prob_male", "is_male", "error"]


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
        scored.insert(0, "path", batch["path"].astype(str).to_numpy())
        return scored[OUTPUT_COLUMNS]


@dataclasses.dataclass(frozen=True)
class RayPrediction:
    """What `predict_with_ray` wrote."""

    output: str
    rows: int
    errors: int
    seconds: float


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


def _write(*, source: str, model_bytes: bytes, output: str, actors: int, batch_size: int) -> None:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    images = ray.data.read_binary_files(source, include_paths=True, file_extensions=_file_extensions())
    scored = images.map_batches(
        OnnxActor,
        fn_constructor_kwargs={"model_bytes": model_bytes},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=ACTOR_CPUS,
        batch_size=batch_size,
        batch_format="pandas",
    )
    scored.write_parquet(output)


def _is_local(output: str) -> bool:
    return "://" not in output


def predict_with_ray(
    *,
    source: str,
    model: Path,
    output: str,
    address: str | None = None,
    actors: int = 1,
    batch_size: int = 256,
    num_cpus: int | None = None,
    strict: bool = False,
) -> RayPrediction:
    """Score every image file under `source` into the Parquet dataset `output`. A local output
    is written beside itself and renamed into place; Ray is always shut down."""
    import ray

    if actors < 1:
        raise BitmojiError("--actors must be at least 1")
    from bitmoji_ml.serving.onnx_model import OnnxModel

    OnnxModel.load(model, threads=1)  # a missing or unusable model fails here, before Ray starts
    if "://" not in source and not Path(source).exists():
        raise BitmojiError(f"{source} does not exist")
    started = time.perf_counter()
    target = output
    if _is_local(output):
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        target = tempfile.mkdtemp(prefix=f".{Path(output).name}.", dir=Path(output).parent)
    _start_ray(address, num_cpus)
    try:
        _write(
            source=source,
            model_bytes=Path(model).read_bytes(),
            output=target,
            actors=actors,
            batch_size=batch_size,
        )
    except BaseException:
        if _is_local(output):
            shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        ray.shutdown()
    rows, errors = _count(target) if _is_local(output) else (-1, -1)
    if _is_local(output):
        if strict and errors:  # a failed strict run writes nothing
            shutil.rmtree(target, ignore_errors=True)
            raise BitmojiError(f"--strict: {errors} file(s) could not be read; {output} was not written")
        swap_folder(Path(target), Path(output))
    return RayPrediction(output, rows, errors, time.perf_counter() - started)


def _count(folder: str) -> tuple[int, int]:
    """Rows and rows with an error in a local Parquet dataset."""
    import pyarrow.parquet as pq

    errors = pq.read_table(folder, columns=["error"]).column("error").to_pylist()
    return len(errors), sum(1 for error in errors if error)
