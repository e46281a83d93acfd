"""Training speed before and after: a default `bitmoji train` on the real data with the code of a
git commit ("before", by default where this branch left main) and with this tree ("after"),
interleaved, each run in a fresh temporary MLflow store, then `export-onnx`, `evaluate` and
`predict testimages/` of that run. Prints one table side by side, and whether both trained the same numbers (per-epoch
val_loss, exactly: a pure speed-up must not change them at the same seed and threads).

    .venv/bin/python benchmarks/train_speed.py                   # merge-base with main vs this tree
    .venv/bin/python benchmarks/train_speed.py --rounds 2        # medians of 2 interleaved rounds
    .venv/bin/python benchmarks/train_speed.py --quick           # 2 epochs: checks that it works
    .venv/bin/python benchmarks/train_speed.py --before HEAD~3 --short-epochs 12 --nproc 2 --seed-cnn

`--cv-seeds 0,1,2` adds `bitmoji cv --seed N` of each side for each seed (5 folds each): the cv
wall per seed, the out-of-fold errors and the cv loss, mean ± std over the seeds.

`--short-epochs N`, `--nproc N`, `--config-rows FILE` and `--seed-cnn` add experiment rows (this tree only): a shorter
schedule is another recipe (the one-cycle schedule is planned on the epoch count), judged by
`bitmoji cv` over seeds, not by this table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from bitmoji_ml.paths import resolve_data_dir
from bitmoji_ml.report import format_table

ROOT = Path(__file__).resolve().parent.parent
TARGETS = (0.995, 0.997)
EPOCH_LINE = re.compile(r"epoch\s+(\d+)/(\d+)\s")
QUICK_EPOCHS = 2


@dataclasses.dataclass
class Timed:
    """A command's wall time and the seconds at which each line of its output appeared."""

    wall: float
    lines: list[tuple[float, str]]
    cpu: float  # user + system seconds of the command and the processes it waited for


def timed(command: list[str], env: dict[str, str], cwd: Path) -> Timed:
    """Run `command`, echo its output, stamp each line; fail loudly on a non-zero exit."""
    started, used = time.perf_counter(), cpu_of_children()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append((time.perf_counter() - started, line.rstrip()))
        print(f"  {lines[-1][0]:6.1f}s  {line.rstrip()}", flush=True)
    if process.wait():
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
    return Timed(time.perf_counter() - started, lines, cpu_of_children() - used)


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclasses.dataclass
class Side:
    """The code a run uses: a folder holding cli.py and bitmoji_ml/."""

    name: str
    root: Path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, str(self.root / "cli.py"), *args]

    def env(self, store: str, data_dir: Path) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(self.root),
            "MLFLOW_TRACKING_URI": store,
            "BITMOJI_DATA": str(data_dir),
        }


def export_commit(ref: str, folder: Path) -> Path:
    """The tree of commit `ref` of this repository, unpacked into `folder` (git archive)."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def default_before() -> str:
    """Where this branch left main (HEAD itself on main)."""
    result = subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() or "HEAD"


def fresh_store(folder: Path) -> str:
    """A new SQLite store, migrated before anything is timed."""
    folder.mkdir(parents=True)
    store = f"sqlite:///{folder}/mlflow.db"
    MlflowClient(tracking_uri=store).search_experiments()
    return store


def train_figures(store: str, run: Timed) -> dict[str, object]:
    """What one training run measured: read back through MLflow, timed by its epoch lines."""
    client = MlflowClient(tracking_uri=store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "bitmoji-gender"]
    (found,) = client.search_runs([experiment.experiment_id])
    run_id = found.info.run_id
    val_acc = dict(sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_acc")))
    val_loss = [m.value for m in sorted(client.get_metric_history(run_id, "val_loss"), key=lambda m: m.step)]
    speed = [m.value for m in client.get_metric_history(run_id, "images_per_second")]
    stamps = {int(m.group(1)): at for at, line in run.lines if (m := EPOCH_LINE.search(line))}
    epochs = sorted(stamps)
    per_epoch = (stamps[epochs[-1]] - stamps[epochs[0]]) / max(1, len(epochs) - 1)
    reached = {
        target: next(((stamps[e], e) for e in epochs if val_acc.get(e, 0.0) >= target), None)
        for target in TARGETS
    }
    best_epoch = int(found.data.metrics["best_epoch"])
    return {
        "run_id": run_id,
        "epochs": len(epochs),
        "wall": run.wall,
        "cpu": run.cpu,
        "per_epoch": per_epoch,
        "fixed": run.wall - len(epochs) * per_epoch,
        "first_epoch": stamps[epochs[0]],
        "reached": reached,
        "best": (found.data.metrics["best_val_acc"], best_epoch),
        "val_loss": val_loss,
        "speed": statistics.mean(speed),
    }


def measure(side: Side, work: Path, lists: Path, data_dir: Path, flags: list[str], downstream: bool) -> dict:
    """Train with `flags` in a fresh store; with `downstream`, export and evaluate that run too."""
    folder = Path(tempfile.mkdtemp(prefix=f"{side.name}-", dir=work))
    store = fresh_store(folder / "mlruns")
    env = side.env(store, data_dir)
    print(f"\n== {side.name}: bitmoji train {' '.join(flags)}", flush=True)
    figures = train_figures(
        store, timed(side.command("train", "--lists", str(lists), *flags), env, side.root)
    )
    if downstream:
        onnx = folder / "bitmoji.onnx"
        export = side.command(
            "export-onnx", "--run-id", figures["run_id"], "--output", str(onnx), "--lists", str(lists)
        )
        figures["export"] = timed(export, env, side.root).wall
        evaluate = side.command("evaluate", "--lists", str(lists), "--output", str(folder / "evaluation"))
        figures["evaluate"] = timed(evaluate, env, side.root).wall
        predictions, images = folder / "predictions.csv", data_dir / "testimages"
        predict = side.command("predict", str(images), "--model", str(onnx), "--output", str(predictions))
        figures["predict"] = timed(predict, env, side.root).wall
        figures["predicted"] = predictions.read_bytes()
        figures["predict_speed"] = (len(figures["predicted"].splitlines()) - 1) / figures["predict"]
    return figures


def measure_cv(side: Side, work: Path, lists: Path, data_dir: Path, seeds: str, flags: list[str]) -> dict:
    """`bitmoji cv --seed N` per seed in one fresh store (one command per seed, which every
    version of the CLI takes): per seed (in order) the cv wall, the out-of-fold errors and the cv
    loss, read back from each seed's cv run."""
    folder = Path(tempfile.mkdtemp(prefix=f"{side.name}-cv-", dir=work))
    store = fresh_store(folder / "mlruns")
    walls = []
    for seed in seeds.split(","):
        print(f"\n== {side.name}: bitmoji cv --seed {seed}", flush=True)
        command = side.command("cv", "--seed", seed, "--lists", str(lists), *flags)
        walls.append(timed(command, side.env(store, data_dir), side.root).wall)
    client = MlflowClient(tracking_uri=store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "bitmoji-gender"]
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.run_kind = 'cv'")
    by_seed = sorted(runs, key=lambda run: int(run.data.params["seed"]))
    return {
        "wall": walls,
        "errors": [run.data.metrics["oof_errors"] for run in by_seed],
        "loss": [run.data.metrics["cv_loss"] for run in by_seed],
    }


def spread(values: list[float], digits: int) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def cv_rows(before: dict, after: dict) -> list[list[str]]:
    old, new = statistics.median(before["wall"]), statistics.median(after["wall"])
    return [
        [
            "5-fold `cv` wall (median over seeds)",
            f"{old:.0f} s",
            f"{new:.0f} s",
            f"{new - old:+.0f} s ({new / old - 1:+.0%})",
        ],
        [
            "OOF errors per seed",
            *(" / ".join(f"{e:.0f}" for e in side["errors"]) for side in (before, after)),
            "",
        ],
        ["OOF errors, mean ± std over seeds", spread(before["errors"], 1), spread(after["errors"], 1), ""],
        ["cv loss, mean ± std over seeds", spread(before["loss"], 4), spread(after["loss"], 4), ""],
    ]


def same_outputs(runs: dict[str, list[dict]]) -> None:
    """Whether a pure speed-up left the numbers alone: per-epoch val_loss and predictions."""
    same = all(r["val_loss"] == runs["before"][0]["val_loss"] for r in runs["before"] + runs["after"])
    print(f"\nper-epoch val_loss identical before/after (every round): {'yes' if same else 'NO'}")
    if "predicted" in runs["before"][0]:
        csvs = {r["predicted"] for r in runs["before"] + runs["after"]}
        print(
            f"predictions.csv byte-identical before/after (every round): {'yes' if len(csvs) == 1 else 'NO'}"
        )


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def reached_text(runs: list[dict], target: float) -> str:
    hits = [r["reached"][target] for r in runs]
    if any(hit is None for hit in hits):
        return "not reached" if all(hit is None for hit in hits) else "not in every round"
    epochs = sorted({epoch for _, epoch in hits})
    return f"{statistics.median(at for at, _ in hits):.1f} s (epoch {'/'.join(map(str, epochs))})"


def best_text(runs: list[dict]) -> str:
    accuracy, epoch = runs[0]["best"]
    same = all(r["best"] == runs[0]["best"] for r in runs)
    return f"{accuracy:.2%} (epoch {epoch})" + ("" if same else " (rounds differ)")


def comparison_rows(before: list[dict], after: list[dict]) -> list[list[str]]:
    def seconds(key: str, label: str) -> list[str]:
        old, new = median(before, key), median(after, key)
        return [label, f"{old:.1f} s", f"{new:.1f} s", f"{new - old:+.1f} s ({new / old - 1:+.0%})"]

    rows = [
        seconds("wall", "whole `bitmoji train` (wall)"),
        seconds("cpu", "CPU time of `bitmoji train` (user + sys)"),
        seconds("fixed", "fixed cost (wall - epochs x s/epoch)"),
        [
            "seconds per epoch (train + val + logging)",
            f"{median(before, 'per_epoch'):.2f} s",
            f"{median(after, 'per_epoch'):.2f} s",
            f"{median(after, 'per_epoch') - median(before, 'per_epoch'):+.2f} s",
        ],
        seconds("first_epoch", "command to the first epoch line"),
        *[
            [f"command to {t:.1%} val acc", reached_text(before, t), reached_text(after, t), ""]
            for t in TARGETS
        ],
        ["best val acc", best_text(before), best_text(after), ""],
        [
            "train images/s (mean of epochs)",
            f"{median(before, 'speed'):,.0f}",
            f"{median(after, 'speed'):,.0f}",
            "",
        ],
    ]
    if "export" in before[0]:
        rows += [
            seconds("export", "`export-onnx --run-id` (wall)"),
            seconds("evaluate", "`evaluate` (wall)"),
            seconds("predict", "`predict` testimages/ (wall, start-up included)"),
            [
                "`predict` images/s (whole command)",
                f"{median(before, 'predict_speed'):,.0f}",
                f"{median(after, 'predict_speed'):,.0f}",
                f"{median(after, 'predict_speed') / median(before, 'predict_speed') - 1:+.0%}",
            ],
        ]
    return rows


def experiment_rows(runs: list[tuple[str, dict]]) -> list[list[str]]:
    return [
        [
            label,
            str(r["epochs"]),
            f"{r['wall']:.1f} s",
            f"{r['per_epoch']:.2f} s",
            *[reached_text([r], t) for t in TARGETS],
            best_text([r]),
        ]
        for label, r in runs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--before", default=None, help="git commit of the 'before' code (default: merge-base with main)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved before/after rounds (medians)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs, no export/evaluate")
    parser.add_argument(
        "--short-epochs", type=int, nargs="*", default=[], help="experiment rows: this tree at N epochs"
    )
    parser.add_argument(
        "--nproc", type=int, nargs="*", default=[], help="experiment rows: this tree on N processes"
    )
    parser.add_argument(
        "--seed-cnn", action="store_true", help="experiment row: one epoch of the seed-cnn baseline"
    )
    parser.add_argument(
        "--config-rows",
        type=Path,
        nargs="*",
        default=[],
        help="experiment rows: this tree with --config FILE",
    )
    parser.add_argument(
        "--cv-seeds",
        default="",
        help="rows of `bitmoji cv --seed N` for these seeds (e.g. 0,1,2), both sides",
    )
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir).resolve()
    before_ref = args.before or default_before()
    flags = ["--epochs", str(QUICK_EPOCHS)] if args.quick else []
    with tempfile.TemporaryDirectory(prefix="bitmoji-train-speed-") as folder:
        work = Path(folder)
        after = Side("after", ROOT)
        before = Side("before", export_commit(before_ref, work / "before-code"))
        lists = work / "lists"
        subprocess.run(
            after.command("prepare", "--lists", str(lists)), env=after.env("", data_dir), cwd=ROOT, check=True
        )
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for round_ in range(args.rounds):
            for side in (before, after) if round_ % 2 == 0 else (after, before):
                runs[side.name].append(measure(side, work, lists, data_dir, flags, downstream=not args.quick))
        experiments = [(f"after, {n} epochs", ["--epochs", str(n)]) for n in args.short_epochs]
        experiments += [(f"after, {n} processes", [*flags, "--nproc", str(n)]) for n in args.nproc]
        experiments += [
            (f"after, --config {c.name}", [*flags, "--config", str(c.resolve())]) for c in args.config_rows
        ]
        experiments += [
            ("after, seed-cnn, 1 epoch", ["--preset", "seed-cnn", "--epochs", "1"])
        ] * args.seed_cnn
        extra = [
            (label, measure(after, work, lists, data_dir, f, downstream=False)) for label, f in experiments
        ]
        cv = (
            {
                side.name: measure_cv(side, work, lists, data_dir, args.cv_seeds, flags)
                for side in (before, after)
            }
            if args.cv_seeds
            else {}
        )
    print(f"\nbitmoji train on {data_dir}, {os.cpu_count()} CPU cores, {args.rounds} round(s)")
    print(f"before: {before_ref[:12]}  after: {ROOT} (working tree)\n")
    rows = comparison_rows(runs["before"], runs["after"]) + (cv_rows(cv["before"], cv["after"]) if cv else [])
    print(format_table(["", "before", "after", "change"], rows))
    epochs = {side: runs[side][0]["epochs"] for side in runs}
    if epochs["before"] != epochs["after"]:  # another recipe: judged by the cv rows, not here
        print(
            f"\nthe default recipes differ ({epochs['before']} vs {epochs['after']} epochs): see the cv rows"
        )
    else:
        same_outputs(runs)
    if extra:
        headers = [
            "experiment",
            "epochs",
            "wall",
            "s/epoch",
            *[f"to {t:.1%}" for t in TARGETS],
            "best val acc",
        ]
        print(format_table(headers, experiment_rows(extra)))


if __name__ == "__main__":
    main()
