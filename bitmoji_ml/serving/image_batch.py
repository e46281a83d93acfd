"""Predict a column of image-file bytes: one output row per input row, with a per-row error.

The engine-neutral core of the registered image model: the MLflow pyfunc, the REST server, Spark
and the Ray engine all call `predict_image_bytes`. Imports numpy, pandas and the project's
decode and ONNX predictor only (never torch or mlflow), so it runs wherever the model does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

import numpy as np
import pandas as pd

from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.images import ImageError, decode_image_bytes
from bitmoji_ml.serving.onnx_model import OnnxModel

IMAGE_COLUMN = "image"
ERROR_COLUMN = "error"
# The label of a row without a prediction: Bitmoji's is_male 0 (it is 1 or -1 otherwise), ''
# for a class name (a typed sentinel rather than null, so a batch of only bad rows has the same
# column types as any other in Ray's Parquet and Spark's rows; its error says why).
NO_LABEL = {True: 0, False: ""}
# A face is a few KiB; a row over this is refused before decoding (the pixel limit of
# decode_image still guards smaller files that expand hugely).
MAX_IMAGE_BYTES = 10 * 2**20
BATCH_SIZE = 256


def encoded_size(value: object) -> int:
    """The image-file bytes a cell holds, known before decoding anything: its length for bytes
    (a memoryview included), at most 3/4 of its length for base64 text, 0 for anything else."""
    if isinstance(value, bytes | bytearray | np.bytes_):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, str):
        return len(value) * 3 // 4
    return 0


def _from_base64(text: str) -> bytes:
    """Strict base64 (a stray character is an error, not silently dropped), line breaks allowed:
    MLflow's own encoder (base64.encodebytes) breaks lines every 76 characters."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ImageError(f"not valid base64 ({error}); send the image file base64-encoded") from error


def as_image_bytes(value: object, max_image_bytes: int) -> bytes:
    """The bytes of one cell (image-file bytes, or text holding them base64-encoded, as a REST
    request does), or ImageError saying why the cell is not an image file. The size limit is
    checked before anything is decoded or copied."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise ImageError("no image in this row")
    if not isinstance(value, bytes | bytearray | memoryview | np.bytes_ | str):
        raise ImageError(f"expected image file bytes, got {type(value).__name__}")
    size = encoded_size(value)
    if size > max_image_bytes:
        raise ImageError(f"refused, {size:,} bytes is over the {max_image_bytes:,}-byte image limit")
    data = _from_base64(value) if isinstance(value, str) else bytes(value)
    if not data:
        raise ImageError("empty image")
    return data


def _decode_rows(values: list, model: OnnxModel, max_image_bytes: int) -> tuple[np.ndarray, list[str]]:
    """Decoded pixels of every row (zeros where a row failed) and each row's error ('' if none)."""
    size = model.preprocess.size
    pixels = np.zeros((len(values), size, size, 3), dtype=np.uint8)
    errors: list[str] = []
    for index, value in enumerate(values):
        try:
            pixels[index] = decode_image_bytes(as_image_bytes(value, max_image_bytes), model.preprocess)
            errors.append("")
        except ImageError as error:
            errors.append(str(error))
    return pixels, errors


def predict_image_bytes(
    model: OnnxModel,
    values: Iterable,
    *,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    batch_size: int = BATCH_SIZE,
) -> pd.DataFrame:
    """One row per image-file value, in input order: the probability columns (float, NaN for a
    bad row), the label column and `error` ('' for a good row); see `output_columns`. Bitmoji:
    `prob_male`, `is_male` (1 / -1, 0 for a bad row), `error`."""
    values, classes = list(values), model.classes
    prob = np.full((len(values), len(classes)), np.nan, dtype=np.float64)
    errors: list[str] = []
    for start in range(0, len(values), batch_size):
        pixels, chunk_errors = _decode_rows(values[start : start + batch_size], model, max_image_bytes)
        good = np.array([not error for error in chunk_errors], dtype=bool)
        if good.any():
            prob[start : start + len(chunk_errors)][good] = model.predict(pixels[good])
        errors += chunk_errors
    bad = np.array([bool(error) for error in errors], dtype=bool)
    labels = np.array(classes.labels(np.nan_to_num(prob)), dtype=np.int64 if classes.kaggle else object)
    labels[bad] = NO_LABEL[classes.kaggle]
    columns = dict(zip(classes.prob_columns, classes.prob_values(prob).T, strict=True))
    return pd.DataFrame(
        {**columns, classes.label_column: labels, ERROR_COLUMN: errors}, columns=output_columns(classes)
    )


def output_columns(classes: Classes) -> list[str]:
    """The columns of `predict_image_bytes`: the probability columns, the label column, `error`."""
    return [*classes.prob_columns, classes.label_column, ERROR_COLUMN]
