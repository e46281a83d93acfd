"""The registered @champion is an image model: bytes in, prob_male / is_male / error out, with a
signature, a real input example, run-time requirements only, and code that loads without this
project installed and without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from image_model_helpers import assert_rows_match, champion, face_files, reference_probabilities

from bitmoji_ml.data.images import Preprocess, decode_image, decode_image_bytes

# Run with `python -I` (no PYTHONPATH, no cwd, no user site): the project's editable-install
# finder is removed and torch, torchvision, onnx and the CLI are blocked, so the only way to get
# `bitmoji_ml` is the model's own code folder. The venv's third-party packages stay visible, as
# onnxruntime, Pillow, numpy, pandas and mlflow are in a fresh serving environment.
ISOLATED_LOADER = r"""
import importlib.abc, json, sys
model_dir, *files = sys.argv[1:]
BLOCKED = {"torch", "torchvision", "onnx", "onnxscript", "cli"}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name}")
sys.meta_path = [Blocker()] + [f for f in sys.meta_path if "editable" not in repr(f).lower()]
try:
    import bitmoji_ml
    raise SystemExit("bitmoji_ml is importable without the model's code")
except ImportError:
    pass
import pandas as pd, mlflow.pyfunc
model = mlflow.pyfunc.load_model(model_dir)
frame = pd.DataFrame({"image": [open(f, "rb").read() for f in files]})
out = model.predict(frame)
project = {m.__file__ for n, m in sys.modules.items() if n.split(".")[0] == "bitmoji_ml"}
print(json.dumps({
    "prob": [None if p != p else p for p in out["prob_male"].tolist()],
    "is_male": out["is_male"].tolist(), "error": out["error"].tolist(),
    "project_files": sorted(project), "torch_loaded": "torch" in sys.modules,
}))
"""


def test_decode_image_bytes_equals_decode_image_of_the_file(tmp_path: Path):
    spec = Preprocess(size=72, resize=72)
    for path in face_files(tmp_path, 8, corrupt=0):
        np.testing.assert_array_equal(decode_image_bytes(path.read_bytes(), spec), decode_image(path, spec))


def test_champion_has_signature_example_and_runtime_requirements_only(
    tmp_path_factory, mlflow_store_template
):
    found = champion(tmp_path_factory, mlflow_store_template)
    mlmodel = yaml.safe_load((found.model_dir / "MLmodel").read_text())
    assert "python_function" in mlmodel["flavors"]
    signature = {key: json.loads(value) for key, value in mlmodel["signature"].items() if value}
    assert signature["inputs"] == [{"type": "binary", "name": "image", "required": True}]
    assert [column["name"] for column in signature["outputs"]] == ["prob_male", "is_male", "error"]
    example = json.loads((found.model_dir / "serving_input_example.json").read_text())
    assert example["dataframe_split"]["columns"] == ["image"]
    requirements = (found.model_dir / "requirements.txt").read_text().split()
    names = {line.split("==")[0].lower() for line in requirements}
    assert names <= {"mlflow", "onnxruntime", "pillow", "simplejpeg", "numpy", "pandas"}, requirements
    assert {"onnxruntime", "pillow", "simplejpeg", "numpy", "pandas"} <= names
    code = found.model_dir / "code" / "bitmoji_ml"
    assert not (code / "export.py").exists() and not (code / "tracking.py").exists()
    assert "import torch" not in "".join(p.read_text() for p in code.rglob("*.py"))


def test_registered_model_loads_and_predicts_without_the_project_or_torch(
    tmp_path_factory, mlflow_store_template, tmp_path: Path
):
    found = champion(tmp_path_factory, mlflow_store_template)
    files = face_files(tmp_path / "faces", 3, corrupt=2)
    completed = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED_LOADER, str(found.model_dir), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert not result["torch_loaded"]
    assert result["project_files"] and all(
        name.startswith(str(found.model_dir / "code")) for name in result["project_files"]
    )
    prob = np.array([np.nan if value is None else value for value in result["prob"]])
    assert_rows_match(
        [f.name for f in files], prob, result["error"], reference_probabilities(found.onnx, files)
    )
    assert {value for value, error in zip(result["is_male"], result["error"], strict=True) if not error} <= {
        1,
        -1,
    }


def test_a_bad_row_does_not_fail_its_batch(tmp_path_factory, mlflow_store_template, tmp_path: Path):
    import mlflow.pyfunc

    found = champion(tmp_path_factory, mlflow_store_template)
    files = face_files(tmp_path / "faces", 4, corrupt=2)
    model = mlflow.pyfunc.load_model(str(found.model_dir))
    values = [f.read_bytes() for f in files] + [b""]
    out = model.predict(pd.DataFrame({"image": values}))
    assert list(out.columns) == ["prob_male", "is_male", "error"] and len(out) == len(values)
    reference = reference_probabilities(found.onnx, files)
    assert_rows_match(
        [f.name for f in files], out["prob_male"].to_numpy()[:-1], list(out["error"])[:-1], reference
    )
    assert out["error"].iloc[-1] == "empty image"
    corrupt = [error for f, error in zip(files, out["error"], strict=False) if f.name.startswith("corrupt")]
    assert len(corrupt) == 2 and all(error.startswith("image bytes: ") for error in corrupt), corrupt


def test_settings_come_from_the_environment_and_unknown_keys_fail(monkeypatch):
    import pytest

    from bitmoji_ml.serving.image_model import CONFIG_ENV, DEFAULT_CONFIG, model_settings

    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert model_settings() == DEFAULT_CONFIG
    monkeypatch.setenv(CONFIG_ENV, '{"max_request_rows": 8}')
    assert model_settings() == {**DEFAULT_CONFIG, "max_request_rows": 8}
    monkeypatch.setenv(CONFIG_ENV, '{"max_rows": 8}')
    with pytest.raises(ValueError, match="unknown setting"):
        model_settings()


def limited_model(**limits: int):
    """The pyfunc class with settings but no ONNX file: enough for its request checks."""
    from bitmoji_ml.serving.image_model import DEFAULT_CONFIG, BitmojiImageModel

    model = BitmojiImageModel()
    model.config = {**DEFAULT_CONFIG, **limits}
    return model


def test_request_bytes_count_memoryview_and_base64_text_before_decoding():
    import pytest
    from mlflow.exceptions import MlflowException

    model = limited_model(max_request_bytes=100)
    for values in ([memoryview(b"x" * 101)], [b"x" * 60, memoryview(b"y" * 41)], ["A" * 136]):
        with pytest.raises(MlflowException, match="bytes of images is over the 100-byte limit"):
            model._check_request(pd.Series(values, dtype=object))
    model._check_request(pd.Series([memoryview(b"x" * 100)], dtype=object))  # at the limit: fine


def test_each_value_is_size_checked_before_it_is_decoded():
    import pytest

    from bitmoji_ml.data.images import ImageError
    from bitmoji_ml.serving.image_batch import as_image_bytes

    # Not base64 at all, but too long: refused for its size, so it was never decoded.
    with pytest.raises(ImageError, match="over the 30-byte image limit"):
        as_image_bytes("%" * 44, 30)
    with pytest.raises(ImageError, match="over the 30-byte image limit"):
        as_image_bytes(memoryview(b"x" * 31), 30)
    with pytest.raises(ImageError, match="^not valid base64"):
        as_image_bytes("%%%", 30)
    with pytest.raises(ImageError, match="^empty image$"):
        as_image_bytes("", 30)
    assert as_image_bytes("eA==\n", 30) == b"x"  # MLflow's encoder breaks lines; that is fine
    assert as_image_bytes(memoryview(b"abc"), 30) == b"abc"


def test_a_bad_rows_probability_is_null_in_json():
    from bitmoji_ml.serving.image_model import json_safe

    rows = pd.DataFrame({"prob_male": [0.25, np.nan], "is_male": [-1, 0], "error": ["", "empty image"]})
    records = json_safe(rows).to_dict(orient="records")
    text = json.dumps(records, allow_nan=False)  # raises on NaN, as JSON.parse would
    assert json.loads(text) == [
        {"prob_male": 0.25, "is_male": -1, "error": ""},
        {"prob_male": None, "is_male": 0, "error": "empty image"},
    ]
