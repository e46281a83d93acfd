"""The cost and the table of benchmarks/ensemble_protocol.py: `bitmoji predict` side by side
for each row's model, the network's CPU per image, and the printed table."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

PREDICT_SPEED = re.compile(r"([\d,]+) images/s")  # `bitmoji predict`'s summary line


def cpu_ms_per_image(model: str, images: np.ndarray) -> float:
    """CPU time of the network alone, one onnxruntime thread, per image (best of 3 passes)."""
    from bitmoji_ml.serving.onnx_model import OnnxModel

    onnx_model = OnnxModel.load(model, threads=1)
    onnx_model.predict_batched(images[:64])  # warm-up
    passes = []
    for _ in range(3):
        started = time.process_time()
        onnx_model.predict_batched(images)
        passes.append(time.process_time() - started)
    return 1000 * min(passes) / len(images)


def predict_cost(p: Any, models: dict[str, str], rounds: int) -> dict:
    """`bitmoji predict` over testimages/ per model, rounds interleaved: the median of the
    images/s it reports (its own count, start-up excluded) and of the command's wall seconds
    (start-up included); and the network's single-thread CPU ms/image on the decoded images."""
    from bitmoji_ml.data.cache import decode_all
    from bitmoji_ml.serving.folder_engine import find_images
    from bitmoji_ml.serving.onnx_model import OnnxModel

    folder = p.data_dir / "testimages"
    paths = find_images(folder)
    walls: dict[str, list[float]] = {name: [] for name in models}
    reported: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            output_csv = str(p.work / f"predictions-{name}.csv")
            started = time.perf_counter()
            output = p.bitmoji(
                "predict", str(folder), "--model", model, "--output", output_csv, "--threads", str(p.threads)
            )
            walls[name].append(time.perf_counter() - started)
            reported[name].append(float(PREDICT_SPEED.findall(output)[-1].replace(",", "")))
    images = decode_all(paths, OnnxModel.load(next(iter(models.values()))).preprocess)
    return {
        name: {
            "images": len(paths),
            "images_per_second": statistics.median(reported[name]),
            "predict_wall_seconds": statistics.median(walls[name]),
            "cpu_ms_per_image": cpu_ms_per_image(model, images),
            "onnx_bytes": Path(model).stat().st_size,
        }
        for name, model in models.items()
    }


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4g} ± {std:.2g}"


def table(results: dict[str, dict[int, dict]], cost: dict) -> str:
    from bitmoji_ml.report import format_table

    headers = [
        "row",
        "seed",
        "val errors",
        "accuracy",
        "log loss",
        "predict img/s",
        "predict wall s",
        "CPU ms/img (1 thread)",
        "ONNX KB",
    ]
    rows = []
    for name, by_seed in results.items():
        for seed, result in by_seed.items():
            rows.append(
                [
                    name,
                    str(seed),
                    f"{result['errors']} / {result['images']}",
                    f"{result['accuracy']:.2%}",
                    f"{result['log_loss']:.4f}",
                    "",
                    "",
                    "",
                    "",
                ]
            )
        values = list(by_seed.values())
        if not values:
            continue
        the_cost = cost.get(name, {})
        rows.append([
            name, "mean ± std", spread([v["errors"] for v in values]), spread([100 * v["accuracy"] for v in values]) + " %",
            spread([v["log_loss"] for v in values]),
            f"{the_cost['images_per_second']:.0f}" if the_cost else "",
            f"{the_cost['predict_wall_seconds']:.2f}" if the_cost else "",
            f"{the_cost['cpu_ms_per_image']:.3f}" if the_cost else "",
            f"{the_cost['onnx_bytes'] / 1024:.0f}" if the_cost else "",
        ])  # fmt: skip
    return format_table(headers, rows)
