"""Prediction benchmark over 20,000 images (copies of the test images in a temp folder):
`bitmoji predict` end to end, decode-only (the ceiling), and a PyTorch eager loop over the same
checkpoint. Prints one table.

    .venv/bin/python benchmarks/predict_speed.py [--images 20000] [--checkpoint best.pt]

Without --checkpoint it takes the best checkpoint of the experiment (run `make train` first).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bitmoji_ml.checkpoints import model_from_checkpoint, read_checkpoint
from bitmoji_ml.data.cache import decode_all
from bitmoji_ml.export import export_job, quantize_int8
from bitmoji_ml.inference import decoded_batches, find_images
from bitmoji_ml.paths import EXPERIMENT, LISTS_DIR, resolve_data_dir
from bitmoji_ml.report import format_table

ROOT = Path(__file__).resolve().parent.parent


def make_image_set(source: Path, target: Path, count: int) -> list[Path]:
    """`count` files copied round-robin from `source` (distinct names, real JPEG bytes)."""
    originals = find_images(source)
    target.mkdir(parents=True)
    paths = []
    for index in range(count):
        original = originals[index % len(originals)]
        path = target / f"{index:06d}{original.suffix}"
        shutil.copyfile(original, path)
        paths.append(path)
    return paths


def torch_eager(checkpoint: dict, paths: list[Path], batch_size: int) -> float:
    """Decode with the same function, then batched PyTorch inference; images/s."""
    torch.set_num_threads(os.cpu_count() or 1)
    model, preprocess = model_from_checkpoint(checkpoint)
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            images = decode_all(paths[start : start + batch_size], preprocess)
            torch.softmax(model(torch.from_numpy(images)), dim=1)
    return len(paths) / (time.perf_counter() - started)


def predict_command(model: Path, work: Path, batch_size: int) -> tuple[float, float, str]:
    """Run `bitmoji predict` on work/images; (its own images/s, wall seconds, summary line)."""
    started = time.perf_counter()
    command = [
        sys.executable,
        str(ROOT / "cli.py"),
        "predict",
        str(work / "images"),
        "--model",
        str(model),
        "--output",
        str(work / "predictions.csv"),
        "--batch-size",
        str(batch_size),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()
    wall = time.perf_counter() - started
    return float(re.search(r"([\d,]+) images/s", output).group(1).replace(",", "")), wall, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    source = resolve_data_dir(args.data_dir) / "testimages"
    with tempfile.TemporaryDirectory(prefix="bitmoji-predict-bench-") as folder:
        work = Path(folder)
        if args.checkpoint is None:
            from bitmoji_ml.tracking.registry import best_logged_checkpoint
            from bitmoji_ml.tracking.store import Store

            best = best_logged_checkpoint(
                Store.open(), experiment=EXPERIMENT, lists_dir=LISTS_DIR, folder=work
            )
            args.checkpoint = best.path
        checkpoint = read_checkpoint(args.checkpoint)
        onnx_path = work / "bitmoji.onnx"
        export_job(
            onnx_path, checkpoint=args.checkpoint, register=False, lists_dir=None, echo=lambda *_: None
        )
        paths = make_image_set(source, work / "images", args.images)
        _, preprocess = model_from_checkpoint(checkpoint)

        int8_path = work / "bitmoji.int8.onnx"
        calibration = find_images(source.parent / "trainimages")[:256]  # as export-onnx: training images
        quantize_int8(onnx_path, int8_path, decode_all(calibration, preprocess))
        measured = {
            name: predict_command(path, work, args.batch_size)
            for name, path in (("fp32", onnx_path), ("int8", int8_path))
        }

        # The same threaded, batched decoder that `predict` uses, with no inference behind it.
        started = time.perf_counter()
        for _ in decoded_batches(paths, preprocess, args.batch_size, os.cpu_count() or 1):
            pass
        decode_only = len(paths) / (time.perf_counter() - started)

        eager = torch_eager(checkpoint, paths, args.batch_size)
    rows = [
        [f"bitmoji predict, {name} model", f"{speed:,.0f}", f"{args.images / wall:,.0f}"]
        for name, (speed, wall, _) in measured.items()
    ] + [
        ["decode only (the ceiling)", f"{decode_only:,.0f}", "-"],
        ["PyTorch eager loop, same checkpoint", f"{eager:,.0f}", "-"],
    ]
    print(
        f"\n{args.images:,} images of {preprocess.size} px input, {os.cpu_count()} CPU cores, batch {args.batch_size}"
    )
    print(format_table(["path", "images/s", "incl. process start"], rows))
    for name, (_, _, summary) in measured.items():
        print(f"bitmoji predict ({name}): {summary}")


if __name__ == "__main__":
    main()
