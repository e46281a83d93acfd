"""Does a change keep training bit-identical? Train the default recipe with two checkouts of the
project (e.g. a git worktree of the old commit and this one) on the same lists, seed and thread
count, each into its own MLflow store, and compare every per-epoch train_loss, val_loss and
val_acc. Prints one table and whether the histories are identical.

    python benchmarks/same_metrics.py --before /work/wt/base --after . [--epochs 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

KEYS = ("train_loss", "val_loss", "val_acc")


def train(code: Path, lists: Path, folder: Path, extra: list[str]) -> list[tuple]:
    """Run `cli.py train` of checkout `code` into a store under `folder`; its metric histories."""
    (folder / "mlruns").mkdir(parents=True)
    database = folder / "mlruns" / "mlflow.db"
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{database}", "PYTHONPATH": str(code)}
    command = [sys.executable, str(code / "cli.py"), "train", "--lists", str(lists), *extra]
    subprocess.run(command, env=environment, cwd=folder, check=True, capture_output=True, text=True)
    with sqlite3.connect(database) as connection:
        marks = ",".join("?" * len(KEYS))
        query = f"select key, step, value from metrics where key in ({marks}) order by key, step"
        return connection.execute(query, KEYS).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the old code")
    parser.add_argument("--after", type=Path, default=Path("."), help="checkout of the new code")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    args = parser.parse_args()
    extra = ["--threads", str(args.threads)] + (["--epochs", str(args.epochs)] if args.epochs else [])
    with tempfile.TemporaryDirectory(prefix="same-metrics-") as scratch:
        folder, after = Path(scratch), args.after.resolve()
        prepare = [sys.executable, str(after / "cli.py"), "prepare", "--lists", str(folder / "lists")]
        prepare += ["--data-dir", str(args.data_dir)] if args.data_dir else []
        subprocess.run(prepare, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(after)})
        before = train(args.before.resolve(), folder / "lists", folder / "before", extra)
        now = train(after, folder / "lists", folder / "after", extra)
    print(f"{'metric':<11} {'epoch':>5}  {'before':>20}  {'after':>20}")
    for (key, step, old), (_, _, new) in zip(before, now, strict=True):
        if key == "val_loss":
            print(f"{key:<11} {step:>5}  {old:>20.17f}  {new:>20.17f}")
    same = before == now
    print(f"{len(before)} values ({', '.join(KEYS)} per epoch): {'identical' if same else 'DIFFERENT'}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
