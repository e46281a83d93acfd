"""CPU cost of each registered small network, side by side in one invocation: the numbers to
weigh against a recipe's cross-validated accuracy when choosing or designing a model.

    .venv/bin/python benchmarks/network_cost.py [--models hybrid separable compact] [--data-dir D]

Each model is exported with seeded random weights (speed does not depend on the weights) and
run by onnxruntime with one thread over the test images, decoded with the model's own decoder;
rows give the input side, parameters, ONNX size and single-threaded CPU ms per image of the
decode and of the network (`time.process_time()`, so other load matters little). Judge a new
network by its ratio to the others in the same table, never by a number from another machine.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from predict_speed import cpu_per_image, export_model

from bitmoji_ml.models import count_parameters, create_model, model_spec
from bitmoji_ml.paths import resolve_data_dir
from bitmoji_ml.report import format_table
from bitmoji_ml.serving.folder_engine import find_images
from bitmoji_ml.serving.onnx_model import OnnxModel

SMALL_MODELS = ["hybrid", "separable", "compact"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=SMALL_MODELS)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    files = find_images(resolve_data_dir(args.data_dir) / "testimages")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bitmoji-network-cost-") as folder:
        for name in args.models:
            path = export_model(name, None, Path(folder))
            model = OnnxModel.load(path, threads=1)
            # The best of two rounds: the first pays for cold caches, whichever model goes first.
            decode, network = map(min, zip(*(cpu_per_image(model, files) for _ in range(2)), strict=True))
            preprocess = model_spec(name).preprocess
            rows.append([
                name, f"{preprocess.size} px ({preprocess.decoder})", f"{count_parameters(create_model(name)):,}",
                f"{path.stat().st_size / 1024:.0f} KiB", f"{decode:.3f} ms", f"{network:.3f} ms",
            ])  # fmt: skip
    print("\nCPU per image, one thread (process_time), random weights")
    print(format_table(["model", "input", "parameters", "ONNX", "decode", "network"], rows))


if __name__ == "__main__":
    main()
