"""Writes the registered image model: the exported ONNX file wrapped in `BitmojiImageModel`, with
a signature naming the output columns of the file's classes, a real image as input example,
run-time requirements only (never torch) and the few project modules it needs as its code.
tracking.registration.log_export logs and registers it."""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema

import bitmoji_ml
from bitmoji_ml.data.classes import Classes
from bitmoji_ml.serving.image_batch import ERROR_COLUMN, IMAGE_COLUMN
from bitmoji_ml.serving.image_model import ONNX_ARTIFACT
from bitmoji_ml.serving.onnx_model import OnnxModel

logger = logging.getLogger(__name__)

# Everything the model imports from this project, and nothing else (no torch, no mlflow calls).
# A package's __init__.py travels with its modules, so those files must stay import-free.
CODE_MODULES = (
    "__init__.py",
    "errors.py",
    "data/__init__.py",
    "data/classes.py",
    "data/images.py",
    "serving/__init__.py",
    "serving/onnx_model.py",
    "serving/image_batch.py",
    "serving/image_model.py",
)
RUNTIME_PACKAGES = ("onnxruntime", "pillow", "simplejpeg", "numpy", "pandas")


def signature(classes: Classes) -> ModelSignature:
    """Image bytes in; the probability columns (double), the label column (Bitmoji's is_male:
    long; a class name: string) and `error` out, in the order the model returns them."""
    label_type = "long" if classes.kaggle else "string"
    outputs = [ColSpec("double", name) for name in classes.prob_columns]
    outputs += [ColSpec(label_type, classes.label_column), ColSpec("string", ERROR_COLUMN)]
    return ModelSignature(inputs=Schema([ColSpec("binary", IMAGE_COLUMN)]), outputs=Schema(outputs))


def runtime_requirements() -> list[str]:
    """The model's pip requirements: the installed versions of the run-time packages."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in RUNTIME_PACKAGES]


def copy_model_code(folder: Path) -> Path:
    """A `bitmoji_ml` package under `folder` holding only CODE_MODULES; returns its path."""
    source = Path(bitmoji_ml.__file__).parent
    package = folder / "bitmoji_ml"
    for name in CODE_MODULES:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, package / name)
    return package


def input_example(image: Path | None) -> pd.DataFrame | None:
    """One real face as the model's input example (None when no image is at hand)."""
    if image is None or not Path(image).is_file():
        return None
    return pd.DataFrame({IMAGE_COLUMN: [Path(image).read_bytes()]})


def save_image_model(path: Path, *, mlflow_model: Model, onnx_path: Path, example_image: Path | None) -> None:
    """Write the image model's MLflow model folder at `path` (models-from-code, nothing pickled)."""
    entry = Path(__file__).with_name("image_model_code.py")
    example = input_example(example_image)
    if example is None:
        logger.info("note: no validation image at hand; the image model is logged without an input example")
    with tempfile.TemporaryDirectory(prefix="bitmoji-image-model-") as folder:
        mlflow.pyfunc.save_model(
            str(path),
            python_model=str(entry),
            artifacts={ONNX_ARTIFACT: str(onnx_path)},
            code_paths=[str(copy_model_code(Path(folder)))],
            pip_requirements=runtime_requirements(),
            signature=signature(OnnxModel.load(onnx_path, threads=1).classes),
            input_example=example,
            mlflow_model=mlflow_model,
        )
