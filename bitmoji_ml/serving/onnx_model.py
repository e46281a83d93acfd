"""The onnxruntime predictor: an exported bitmoji model opened, checked against its metadata and
run on uint8 NHWC batches into (n, classes) probabilities. Imports numpy and onnxruntime only
(never torch or mlflow), so it starts fast and travels in the registered image model's code.

A file exported before models had N classes has one output, `prob_male` [batch] (P(male)), and
no class names: it is Bitmoji's, and its probabilities are read as [1 - P(male), P(male)]."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.errors import BitmojiError

# metadata_props keys of an exported model (the class names' keys are data.classes'); export
# writes them, this module reads them.
META_PREPROCESS = "bitmoji.preprocess"  # JSON of Preprocess.to_dict()
INPUT_NAME = "images"
PROB_OUTPUT = "probabilities"  # [batch, classes]: softmax, column i is P(classes.names[i])
LOGITS_OUTPUT = "logits"  # [batch, classes]
LEGACY_PROB_OUTPUT = "prob_male"  # [batch]: P(male), the only probability of a round-1 file


@dataclasses.dataclass
class OnnxModel:
    """An exported bitmoji model ready to run: session, preprocessing and metadata."""

    path: Path
    session: object
    preprocess: Preprocess
    metadata: dict[str, str]
    classes: Classes
    output: str = PROB_OUTPUT  # the probability output the file has (LEGACY_PROB_OUTPUT: P(male))

    @classmethod
    def load(cls, path: str | Path, threads: int = 0) -> OnnxModel:
        """Open `path` with onnxruntime and check it is a bitmoji model with a usable input."""
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise BitmojiError(f"model {path} not found: run `bitmoji export-onnx` first (or pass --model)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Idle onnxruntime threads would spin on cores the decode threads need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise BitmojiError(f"{path} is not a loadable ONNX model: {error}") from error
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        if META_PREPROCESS not in metadata:
            raise BitmojiError(
                f"{path} has no {META_PREPROCESS} metadata: export it with `bitmoji export-onnx`"
            )
        try:
            preprocess = Preprocess.from_dict(metadata[META_PREPROCESS])
        except (KeyError, TypeError, ValueError) as error:
            raise BitmojiError(f"{path}: malformed {META_PREPROCESS} metadata ({error})") from error
        except BitmojiError as error:  # e.g. a decoder this build lacks
            raise BitmojiError(f"{path}: {error}") from error
        inputs = session.get_inputs()
        expected = f"uint8 [batch, {preprocess.size}, {preprocess.size}, 3]"
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or len(inputs[0].shape) != 4:
            raise BitmojiError(f"{path}: model input does not match: expected one {expected} input")
        shape = inputs[0].shape
        if list(shape[1:]) != [preprocess.size, preprocess.size, 3]:
            raise BitmojiError(f"{path}: model input {shape} does not match its metadata ({expected})")
        try:
            classes = Classes.from_metadata(metadata)
        except (BitmojiError, TypeError) as error:
            raise BitmojiError(f"{path}: {error}") from error
        output = _probability_output(path, session, classes)
        return cls(path, session, preprocess, metadata, classes, output)

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 (n, classes) probabilities (column i: P(classes.names[i])) of a uint8 NHWC batch."""
        (prob,) = self.session.run([self.output], {self.input_name: images})
        if self.output == LEGACY_PROB_OUTPUT:
            return np.stack([1 - prob, prob], axis=1)
        return prob

    def predict_batched(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(n, classes) probabilities of any number of decoded images, `batch_size` at a time."""
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate(
            [self.predict(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
        )


def _probability_output(path: Path, session, classes: Classes) -> str:
    """The output holding the probabilities: `probabilities` [batch, classes], or a round-1
    file's `prob_male` (which only a Bitmoji model has)."""
    outputs = {output.name: output for output in session.get_outputs()}
    if PROB_OUTPUT in outputs:
        shape = outputs[PROB_OUTPUT].shape
        width = shape[1] if len(shape) == 2 else None
        if len(shape) != 2 or (isinstance(width, int) and width != len(classes)):
            raise BitmojiError(
                f"{path}: output {PROB_OUTPUT!r} has shape {shape}, expected [batch, {len(classes)}] "
                f"for its {len(classes)} classes ({', '.join(classes.names)})"
            )
        return PROB_OUTPUT
    if LEGACY_PROB_OUTPUT in outputs and len(classes) == 2:
        return LEGACY_PROB_OUTPUT
    raise BitmojiError(f"{path}: no {PROB_OUTPUT!r} output (outputs: {list(outputs)})")
