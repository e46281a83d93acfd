"""From a trained checkpoint to a shipped, registered ONNX model; one job per module:

- `graph`: the exported graph (uint8 NHWC in, per-class probabilities and logits out) and its
  ONNX metadata (the class names among it)
- `parity`: PyTorch vs onnxruntime, the report that must pass before a file is written
- `int8_gate`: the int8 report's cases and timing, and whether int8 becomes champion
- `int8`: int8 quantisation beside an fp32 file, judged against it
- `source`: which checkpoint is exported, and its content hash
- `register`: one registered version per checkpoint, and the reasoned `@champion` move
- `job`: `export_job`, the `export-onnx` command's work
- `ensemble`: `export-onnx --cv-run`, a cv run's fold models as one model (uses job's export_checked)

Dependencies point down that list's reverse (ensemble -> job; job -> register/int8/parity/graph; int8 -> graph,
int8_gate); MLflow is reached only through `bitmoji_ml.tracking`. This package imports nothing:
import the module you need (`from bitmoji_ml.export.job import export_job`).
"""
