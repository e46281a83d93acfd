"""Prediction benchmark: today's path (the `compact` model at 72 px, Pillow decoder) and the new
one (the default model, its decoder) side by side, in one table from one invocation.

    .venv/bin/python benchmarks/predict_speed.py [--images 20000] [--big-images 200000]
        [--old-checkpoint compact.pt] [--new-checkpoint default.pt] [--data-dir ../shared/bitmoji]
        [--old-cv-run ID] [--new-cv-run ID]

Rows: CPU per image of the decode and of the network, each single-threaded
(`time.process_time()`, onnxruntime with one thread: little affected by other load), the limit
that gives on this machine's cores, `bitmoji predict`'s own images/s over `--images` files and its
ratio to the limit, its CPU per image over all its threads (start-up taken out), its peak RSS
over `--images` and `--big-images` files, the start-up time (a whole `bitmoji predict` of one
image), the ONNX size, the checkpoints' val accuracy and, given the ids of a `bitmoji cv` run of
each recipe (same folds: same --seed), their out-of-fold accuracy over every labelled image. The folders are hard links to the test
images, under a temporary folder. Without checkpoints each model gets seeded random weights:
speed does not depend on the weights. Wall-clock rows need otherwise idle cores; the CPU rows
hold up under other load. About 3 minutes on two idle cores with the default counts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bitmoji_ml.data.images import decode_image
from bitmoji_ml.models import DEFAULT_MODEL
from bitmoji_ml.paths import resolve_data_dir
from bitmoji_ml.report import format_table
from bitmoji_ml.serving.folder_engine import PREDICT_BATCH, find_images
from bitmoji_ml.serving.onnx_model import OnnxModel

ROOT = Path(__file__).resolve().parent.parent
OLD_MODEL = "compact"  # today's network; its registry entry decodes with Pillow at 72 px
CPU_SAMPLES = 2048  # decodes and network images timed per path


def export_model(name: str, checkpoint: Path | None, work: Path) -> Path:
    """An ONNX file of `checkpoint`, or of model `name` with seeded random weights."""
    import torch

    from bitmoji_ml.checkpoints import save_checkpoint
    from bitmoji_ml.export.job import export_job
    from bitmoji_ml.models import create_model, model_spec

    if checkpoint is None:
        torch.manual_seed(0)
        checkpoint = work / f"{name}.pt"
        preprocess = model_spec(name).preprocess
        fields = {"model": name, "preprocess": preprocess.to_dict(), "epoch": 0, "metrics": {}}
        save_checkpoint(checkpoint, create_model(name, preprocess).eval(), config={"model": name}, **fields)
    output = work / f"{checkpoint.stem}-{name}.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        export_job(output=output, checkpoint=checkpoint, register=False, lists_dir=None)
    return output


def link_folder(originals: list[Path], target: Path, count: int) -> Path:
    """`count` distinct names, hard links round-robin to `originals` (copied once beside)."""
    copies = target.parent / f"{target.name}-originals"
    copies.mkdir(parents=True)
    sources = [Path(shutil.copyfile(path, copies / path.name)) for path in originals]
    target.mkdir()
    for index in range(count):
        source = sources[index % len(sources)]
        os.link(source, target / f"{index:07d}{source.suffix}")
    return target


def cpu_per_image(model: OnnxModel, files: list[Path]) -> tuple[float, float]:
    """(decode, network) CPU milliseconds per image, one thread each."""
    spec = model.preprocess
    paths = [files[i % len(files)] for i in range(CPU_SAMPLES)]
    decode_image(paths[0], spec)
    started = time.process_time()
    images = np.stack([decode_image(path, spec) for path in paths])
    decode = (time.process_time() - started) * 1000 / len(paths)
    model.predict(images[:PREDICT_BATCH])  # warm-up
    started = time.process_time()
    for start in range(0, len(images), PREDICT_BATCH):
        model.predict(images[start : start + PREDICT_BATCH])
    network = (time.process_time() - started) * 1000 / len(images)
    return decode, network


# Runs cli.py in the child and prints the child's own peak RSS at exit. VmHWM belongs to the
# process's own memory map, so unlike ru_maxrss it does not include the pages of this (torch-
# loaded) parent that the child shared between fork and exec.
PEAK_RSS_CHILD = """
import atexit, re, resource, runpy, sys
def peak():
    status = open("/proc/self/status").read()
    print("peak-rss-kib", re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print("cpu-seconds", usage.ru_utime + usage.ru_stime, file=sys.stderr)
atexit.register(peak)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclasses.dataclass
class PredictRun:
    """One `bitmoji predict` process."""

    speed: float  # images/s it reports (decode + inference, after start-up)
    wall: float  # seconds, start-up included
    peak_rss_mib: float
    cpu_seconds: float  # all threads, start-up included


def run_predict(model: Path, folder: Path, work: Path) -> PredictRun:
    """`bitmoji predict` in a fresh process, measured."""
    command = [sys.executable, "-c", PEAK_RSS_CHILD, str(ROOT / "cli.py"), "predict", str(folder)]
    command += ["--model", str(model), "--output", str(work / "p.csv")]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"bitmoji predict failed:\n{finished.stdout}{finished.stderr}")
    speed = float(re.search(r"([\d,]+) images/s", finished.stdout).group(1).replace(",", ""))
    peak = int(re.search(r"peak-rss-kib (\d+)", finished.stderr).group(1))
    cpu = float(re.search(r"cpu-seconds ([\d.]+)", finished.stderr).group(1))
    return PredictRun(speed, wall, peak / 1024, cpu)


def measure(name: str, model_path: Path, folders: dict[str, Path], files: list[Path], work: Path) -> dict:
    """Every figure of one path."""
    model = OnnxModel.load(model_path, threads=1)
    label = f"{model.metadata.get('model_name', name)} {model.preprocess.size} px, {model.preprocess.decoder}"
    decode, network = cpu_per_image(model, files)
    cores = os.cpu_count() or 1
    limit = cores * 1000 / (decode + network)
    run = run_predict(model_path, folders["images"], work)
    big_rss = run_predict(model_path, folders["big"], work).peak_rss_mib if "big" in folders else None
    startups = [run_predict(model_path, folders["one"], work) for _ in range(3)]
    startup = min(startups, key=lambda one: one.wall)
    # CPU of all threads per image, start-up (the one-image run) taken out.
    cpu = (run.cpu_seconds - startup.cpu_seconds) * 1000 / (len(os.listdir(folders["images"])) - 1)
    size = model_path.stat().st_size / 1024
    val_acc = float(model.metadata.get("val_acc") or "nan")  # the checkpoint's, nan for random weights
    return {"label": label, "decode": decode, "network": network, "limit": limit, "speed": run.speed,
            "cpu": cpu, "rss": run.peak_rss_mib, "big_rss": big_rss, "startup": startup.wall, "size": size, "val_acc": val_acc}  # fmt: skip


def cv_accuracy(run_id: str | None) -> str:
    """`oof_acc (errors of images)` of a `bitmoji cv` parent run in $MLFLOW_TRACKING_URI's store."""
    if run_id is None:
        return "-"
    from bitmoji_ml.tracking.store import Store

    run = Store.open().get_run(run_id)
    metrics, images = run.data.metrics, run.data.params["cv_images"]
    return f"{metrics['oof_acc']:.2%} ({int(metrics['oof_errors'])} of {images} wrong)"


def table(old: dict, new: dict, args: argparse.Namespace) -> str:
    def ratio(key: str) -> str:
        return f"{old[key] / new[key]:.2f}x less" if key in ("decode", "network", "cpu") else ""

    rows = [
        ["path", old["label"], new["label"], ""],
        ["decode CPU per image, 1 thread", f"{old['decode']:.3f} ms", f"{new['decode']:.3f} ms", ratio("decode")],
        ["network CPU per image, 1 thread", f"{old['network']:.3f} ms", f"{new['network']:.3f} ms", ratio("network")],
        [f"limit on {os.cpu_count()} cores", f"{old['limit']:,.0f} img/s", f"{new['limit']:,.0f} img/s", ""],
        [f"bitmoji predict, {args.images:,} images", f"{old['speed']:,.0f} img/s", f"{new['speed']:,.0f} img/s",
         f"{new['speed'] / old['speed']:.2f}x faster"],
        ["  ratio to the limit", f"{old['speed'] / old['limit']:.2f}", f"{new['speed'] / new['limit']:.2f}", ""],
        ["  its CPU per image, all threads", f"{old['cpu']:.3f} ms", f"{new['cpu']:.3f} ms", ratio("cpu")],
        [f"peak RSS, {args.images:,} images", f"{old['rss']:.0f} MiB", f"{new['rss']:.0f} MiB", ""],
    ]  # fmt: skip
    if old["big_rss"] is not None:
        rows.append([f"peak RSS, {args.big_images:,} images", f"{old['big_rss']:.0f} MiB", f"{new['big_rss']:.0f} MiB", ""])  # fmt: skip
    rows += [
        ["start-up (predict 1 image, wall)", f"{old['startup']:.2f} s", f"{new['startup']:.2f} s", ""],
        ["ONNX size", f"{old['size']:.0f} KiB", f"{new['size']:.0f} KiB", ""],
        ["val accuracy of the checkpoint", f"{old['val_acc']:.2%}", f"{new['val_acc']:.2%}", ""],
        ["out-of-fold accuracy, bitmoji cv", cv_accuracy(args.old_cv_run), cv_accuracy(args.new_cv_run), ""],
    ]
    return format_table(["", "today", "new", ""], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--big-images", type=int, default=200_000, help="0 skips the big folder")
    parser.add_argument("--old-checkpoint", type=Path, default=None, help=f"a {OLD_MODEL} checkpoint")
    parser.add_argument("--new-checkpoint", type=Path, default=None, help=f"a {DEFAULT_MODEL} checkpoint")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--old-cv-run", default=None, help=f"id of a `bitmoji cv --model {OLD_MODEL}` run")
    parser.add_argument("--new-cv-run", default=None, help="id of a `bitmoji cv` run of the default recipe")
    args = parser.parse_args()
    files = find_images(resolve_data_dir(args.data_dir) / "testimages")
    with tempfile.TemporaryDirectory(prefix="bitmoji-predict-bench-") as folder:
        work = Path(folder)
        old_model = export_model(OLD_MODEL, args.old_checkpoint, work)
        new_model = export_model(DEFAULT_MODEL, args.new_checkpoint, work)
        folders = {"images": link_folder(files, work / "images", args.images)}
        folders["one"] = link_folder(files[:1], work / "one", 1)
        if args.big_images:
            folders["big"] = link_folder(files, work / "big", args.big_images)
        old = measure(OLD_MODEL, old_model, folders, files, work)
        new = measure(DEFAULT_MODEL, new_model, folders, files, work)
    weights = "checkpoints given" if args.old_checkpoint and args.new_checkpoint else "random weights"
    print(
        f"\n{os.cpu_count()} CPU cores, batch {PREDICT_BATCH}, {weights}; CPU figures single-threaded (process_time)"
    )
    print(table(old, new, args))


if __name__ == "__main__":
    main()
