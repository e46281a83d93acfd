"""Training benchmark: a whole `bitmoji train` run of the default model on the real data (once
per `--nproc` value: the same recipe and global batch on 1, 2, ... processes), and one epoch of
the seed-cnn baseline, each in a fresh temporary MLflow store. Prints one table.

    .venv/bin/python benchmarks/train_speed.py [--data-dir ../shared/bitmoji] [--skip-seed]
    .venv/bin/python benchmarks/train_speed.py --nproc 1 2 --skip-seed   # 1 vs 2 processes
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from bitmoji_ml.paths import resolve_data_dir
from bitmoji_ml.report import format_table

ROOT = Path(__file__).resolve().parent.parent
BITMOJI = [sys.executable, str(ROOT / "cli.py")]
TARGET = 0.995


def run(command: list[str], env: dict[str, str], cwd: Path) -> float:
    """Run a command, stream its output, return wall seconds; fail loudly on a non-zero exit."""
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True)
    return time.perf_counter() - started


def figures(store: str, wall: float) -> dict[str, object]:
    """Read the single run of the store back through MLflow."""
    client = MlflowClient(tracking_uri=store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "bitmoji-gender"]
    (run_info,) = client.search_runs([experiment.experiment_id])
    run_id = run_info.info.run_id
    val = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_acc"))
    seconds = dict(sorted((m.step, m.value) for m in client.get_metric_history(run_id, "epoch_seconds")))
    speed = [m.value for m in client.get_metric_history(run_id, "images_per_second")]
    elapsed, to_target = 0.0, None
    for step, accuracy in val:
        elapsed += seconds[step]
        if accuracy >= TARGET and to_target is None:
            to_target = f"{elapsed:.1f} s (epoch {step})"
    return {
        "model": run_info.data.params["model"],
        "processes": run_info.data.params.get("world_size", "1"),
        "batch": run_info.data.params["batch_size"],
        "params": int(run_info.data.tags["parameters"]),
        "epochs": len(val),
        "wall": wall,
        "train": run_info.data.metrics["train_seconds"],
        "to_target": to_target or "not reached",
        "final": val[-1][1],
        "best": run_info.data.metrics["best_val_acc"],
        "speed": sum(speed) / len(speed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--skip-seed", action="store_true", help="skip the (minutes-long) seed-cnn epoch")
    parser.add_argument(
        "--nproc",
        type=int,
        nargs="+",
        default=[1],
        help="train the default model on each number of processes",
    )
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir).resolve()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bitmoji-bench-") as folder:
        work = Path(folder)
        env = {**os.environ, "BITMOJI_DATA": str(data_dir)}
        subprocess.run([*BITMOJI, "prepare", "--lists", str(work / "lists")], env=env, cwd=ROOT, check=True)
        jobs = [(f"default, {n} process{'es' if n > 1 else ''}", ["--nproc", str(n)]) for n in args.nproc]
        if not args.skip_seed:
            jobs.append(("seed-cnn, 1 epoch", ["--preset", "seed-cnn", "--epochs", "1"]))
        for label, flags in jobs:
            store_dir = work / label.replace(",", "").replace(" ", "-") / "mlruns"
            store_dir.mkdir(parents=True)
            store = f"sqlite:///{store_dir}/mlflow.db"
            MlflowClient(tracking_uri=store).search_experiments()  # migrate before timing
            env["MLFLOW_TRACKING_URI"] = store
            wall = run([*BITMOJI, "train", "--lists", str(work / "lists"), *flags], env, ROOT)
            rows.append((label, figures(store, wall)))
            shutil.rmtree(store_dir / "artifacts", ignore_errors=True)
    print(f"\nbitmoji train on {data_dir} ({os.cpu_count()} CPU cores)")
    print(
        format_table(
            [
                "run",
                "processes",
                "global batch",
                "params",
                "epochs",
                "wall s",
                "train s",
                f"time to {TARGET:.1%}",
                "final val acc",
                "best val acc",
                "train img/s",
            ],
            [
                [
                    label,
                    r["processes"],
                    r["batch"],
                    f"{r['params']:,}",
                    r["epochs"],
                    f"{r['wall']:.1f}",
                    f"{r['train']:.1f}",
                    r["to_target"],
                    f"{r['final']:.2%}",
                    f"{r['best']:.2%}",
                    f"{r['speed']:,.0f}",
                ]
                for label, r in rows
            ],
        )
    )
    print_ratios(rows)


def print_ratios(rows: list[tuple[str, dict[str, object]]]) -> None:
    """Wall time and accuracy of N processes against one, and the default model against seed-cnn."""
    default = [r for label, r in rows if label.startswith("default")]
    for r in default[1:]:
        print(
            f"{r['processes']} processes: {r['wall'] / default[0]['wall']:.2f}x the wall time of "
            f"{default[0]['processes']}, best val acc {100 * (r['best'] - default[0]['best']):+.2f} points"
        )
    seed = [r for label, r in rows if label.startswith("seed")]
    if default and seed:
        ratio = default[0]["speed"] / seed[0]["speed"]
        print(f"default model trains {ratio:.1f}x more images per second than seed-cnn")


if __name__ == "__main__":
    main()
