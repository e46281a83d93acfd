"""ONNX models of N classes with known outputs, and labelled images they score, for the tests of
`evaluate` and its files (issue 18, contract item 4).

The model is the exported graph's contract without a network: one uint8 NHWC input `images`,
outputs `probabilities` [batch, N] (softmax) and `logits` [batch, N], metadata
`classes.to_metadata()` and the preprocess. Its logits are `scale` times the mean colour of the
image (red, green, blue) projected on one colour per class, so a test chooses what it predicts
by the colour it paints: a pure CLASS_COLOURS[k] image is class k with P = PURE_PROBABILITY[N].
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.serving.onnx_model import META_PREPROCESS, OnnxModel

SIZE = 16
# one direction in RGB per class; up to 6 classes (enough for the tests)
CLASS_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255))
SCALE = 4.0


def class_model(path: Path, classes: Classes, *, scale: float = SCALE) -> Path:
    """Write the ONNX file of a model telling `classes` apart by colour (see the module)."""
    count = len(classes)
    directions = np.array(CLASS_COLOURS[:count], dtype=np.float32).T / 255.0  # (3, N)
    directions /= np.maximum(directions.sum(axis=0, keepdims=True), 1)  # yellow is not "more" than red
    weights = numpy_helper.from_array((scale * directions).astype(np.float32), "weights")
    nodes = [
        helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels", "axes"], ["colour"], keepdims=0),
        helper.make_node("Div", ["colour", "full"], ["unit"]),
        helper.make_node("MatMul", ["unit", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "classes",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", SIZE, SIZE, 3])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", count]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", count]),
        ],
        [
            weights,
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array(255.0, dtype=np.float32), "full"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    metadata = {**classes.to_metadata(), META_PREPROCESS: json.dumps(preprocess().to_dict())}
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def preprocess() -> Preprocess:
    return Preprocess(size=SIZE, resize=SIZE)


def paint(folder: Path, name: str, colour: tuple[int, int, int]) -> Path:
    """A solid `colour` PNG of SIZE x SIZE."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new("RGB", (SIZE, SIZE), colour).save(path)
    return path


def labelled_list(folder: Path, rows: list[tuple[int, int]], *, classes: Classes | None = None) -> Path:
    """`folder/val.txt` of images painted in class `painted`'s colour and labelled `label`, one per
    (label, painted) row; with `classes`, a `prepare`-style manifest.json beside it naming them."""
    from bitmoji_ml.data.lists import MANIFEST
    from bitmoji_ml.files import file_sha256

    lines = [
        f"{paint(folder / 'images', f'{number:03d}.png', CLASS_COLOURS[painted])} {label}\n"
        for number, (label, painted) in enumerate(rows)
    ]
    listed = folder / "val.txt"
    listed.write_text("".join(lines))
    if classes is not None:
        manifest = {"classes": classes.to_dict(), "files": {"val.txt": file_sha256(listed)}, "digest": "d"}
        (folder / MANIFEST).write_text(json.dumps(manifest))
    return listed


class ContractOnnxModel(OnnxModel):
    """OnnxModel as contract item 4 has it (the ship branch makes it so): `predict` returns
    (n, N) probabilities, a file with only round 1's `prob_male` gives [1 - p, p], and `classes`
    comes from the metadata. Used by the tests only while serving/onnx_model.py predates it."""

    @classmethod
    def load(cls, path: str | Path, threads: int = 0) -> ContractOnnxModel:
        import onnxruntime as ort

        path = Path(path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        return cls(path, session, Preprocess.from_dict(metadata[META_PREPROCESS]), metadata)

    @property
    def classes(self) -> Classes:
        return Classes.from_metadata(self.metadata)

    def predict(self, images: np.ndarray) -> np.ndarray:
        outputs = [output.name for output in self.session.get_outputs()]
        if "probabilities" in outputs:
            return self.session.run(["probabilities"], {self.input_name: images})[0]
        (prob,) = self.session.run(["prob_male"], {self.input_name: images})
        return np.stack([1 - prob, prob], axis=1)

    def predict_batched(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate(
            [self.predict(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
        )


def use_contract_onnx_model(monkeypatch) -> None:
    """Until the ship branch's OnnxModel (with `classes`) is merged, serve the contract's one."""
    from bitmoji_ml.serving import onnx_model

    landed = onnx_model.OnnxModel
    if not (hasattr(landed, "classes") or "classes" in getattr(landed, "__dataclass_fields__", {})):
        monkeypatch.setattr(onnx_model, "OnnxModel", ContractOnnxModel)
