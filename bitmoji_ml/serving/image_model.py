"""The registered image model as an MLflow `PythonModel`: image-file bytes in, the probability
columns, the label column (Bitmoji: prob_male and Kaggle's is_male) and a per-row error out.

It travels inside the logged model (MLflow `code_paths`) with only the modules it needs, so it
loads where this project is not installed: its imports are mlflow (present wherever a pyfunc is
loaded), numpy, pandas, Pillow and onnxruntime, never torch. No tracking calls here;
`image_model_registry.py` logs and registers it.
"""

from __future__ import annotations

import json
import os

import pandas as pd
from mlflow.pyfunc import PythonModel

from bitmoji_ml.serving.image_batch import IMAGE_COLUMN, MAX_IMAGE_BYTES, encoded_size, predict_image_bytes
from bitmoji_ml.serving.onnx_model import OnnxModel

ONNX_ARTIFACT = "onnx_model"
# Settings, as JSON in $BITMOJI_IMAGE_MODEL_CONFIG (read when the model loads; `bitmoji serve`
# sets the request limits this way). Not an MLflow model_config: MLflow would log its keys as
# params of the export's source run.
CONFIG_ENV = "BITMOJI_IMAGE_MODEL_CONFIG"
THREADS = "intra_op_threads"  # onnxruntime threads per loaded copy; scale out with copies
MAX_IMAGE = "max_image_bytes"  # larger rows get an error, the rest of the batch is predicted
MAX_ROWS = "max_request_rows"  # 0 = no limit; over it the whole call is refused (HTTP 400)
MAX_BYTES = "max_request_bytes"  # 0 = no limit; likewise
DEFAULT_CONFIG = {THREADS: 1, MAX_IMAGE: MAX_IMAGE_BYTES, MAX_ROWS: 0, MAX_BYTES: 0}


def model_settings() -> dict[str, int]:
    """DEFAULT_CONFIG updated from $BITMOJI_IMAGE_MODEL_CONFIG (unknown keys are an error)."""
    overrides = json.loads(os.environ.get(CONFIG_ENV) or "{}")
    unknown = set(overrides) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(
            f"${CONFIG_ENV}: unknown setting(s) {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}"
        )
    return {**DEFAULT_CONFIG, **{key: int(value) for key, value in overrides.items()}}


def _refuse(message: str) -> None:
    """Fail the whole call as a client error (the scoring server answers 400 with `message`)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    raise MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class BitmojiImageModel(PythonModel):
    """ONNX file + the project's decode; input column `image` (bytes), output the model's
    probability columns, its label column and error ('' for a good row): Bitmoji's prob_male,
    is_male (1 male / -1 female, 0 for a bad row), error; else prob_<class>..., label, error."""

    def load_context(self, context) -> None:
        self.config = model_settings()
        self.model = OnnxModel.load(context.artifacts[ONNX_ARTIFACT], int(self.config[THREADS]))

    def _check_request(self, values: pd.Series) -> None:
        """Refuse the whole call over the row or byte limit, counted from the cells' sizes
        before any of them is decoded (bytes, memoryview and base64 text alike)."""
        rows, max_rows = len(values), int(self.config[MAX_ROWS])
        if max_rows and rows > max_rows:
            _refuse(
                f"request refused: {rows} images is over the {max_rows}-image limit; send smaller batches"
            )
        max_bytes = int(self.config[MAX_BYTES])
        if max_bytes:
            total = sum(encoded_size(value) for value in values)
            if total > max_bytes:
                _refuse(f"request refused: {total:,} bytes of images is over the {max_bytes:,}-byte limit")

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if IMAGE_COLUMN not in model_input.columns:
            _refuse(
                f"expected a column {IMAGE_COLUMN!r} of image file bytes, got {list(model_input.columns)}"
            )
        values = model_input[IMAGE_COLUMN]
        self._check_request(values)
        rows = predict_image_bytes(self.model, values, max_image_bytes=int(self.config[MAX_IMAGE]))
        return json_safe(rows)


def json_safe(rows: pd.DataFrame) -> pd.DataFrame:
    """The probabilities None (JSON null) for a row with an error, instead of NaN: the scoring
    server writes the frame with Python's json, whose NaN no JSON parser accepts (a browser's
    JSON.parse rejects the whole response). Spark's udf reads None as a null double."""
    good = rows["error"] == ""
    floats = rows.select_dtypes("float").columns  # the probability columns
    return rows.assign(**{name: rows[name].astype(object).where(good, None) for name in floats})
