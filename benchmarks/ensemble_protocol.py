"""Issue 19's protocol: is a cv ensemble (or a student distilled from it) better than one model,
judged on images none of them trained on or was selected on? One invocation, one table.

    nice -n 10 .venv/bin/python benchmarks/ensemble_protocol.py [--data-dir ../shared/bitmoji]
        [--seeds 0,1,2] [--work /tmp/bitmoji-protocol] [--threads 1] [--rows single,ensemble,...]

Fixed lists: `bitmoji prepare` (seed 0, val 20 %). The val list is only ever scored, never
selected on: every model is its last epoch. Rows, for each seed:
  single             `bitmoji train` on the train list (default recipe), its last.pt exported;
  single-unsmoothed  the same with --label-smoothing 0 (the control of `student`);
  ensemble           `bitmoji cv` (5 folds) over the train list ONLY (a lists folder that
                     `prepare --exclude` makes from the same data without the val images;
                     checked), its fold models exported as one model (`export-onnx --cv-run`);
  student            `bitmoji train --teacher <that ensemble> --label-smoothing 0` on the train
                     list: the default model trained on the ensemble's probabilities for the
                     train images (soft targets only, teacher weight 1; training/teacher.py);
  student-smoothed   the same with the default label smoothing 0.1 on top of the soft targets.
Each is scored with `bitmoji evaluate` on the val list (errors of 600, accuracy, log loss), then
mean ± std over the seeds. Cost of seed 0's models: `bitmoji predict` over testimages/ (medians
of interleaved rounds of its own images/s and of the command's wall time: valid only on a quiet
machine) and the network's single-thread CPU ms/image (`time.process_time`, holds up better).

Everything (MLflow store, lists, models, logs) lives under --work (default /tmp/bitmoji-protocol;
the store is sqlite there). A finished step leaves a JSON file in --work/steps and is not run
again: re-running the command with more --rows or seeds reuses what is done. The verdict
(means over the seeds, per row, and the cost) is written to --work/verdict.json, which
`export-onnx --cv-run ID --verdict` reads (export/verdict.py: the ensemble becomes @champion
only if no worse in errors and better in log loss than `single`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's bitmoji_ml, as the `bitmoji` commands it runs
from protocol_report import predict_cost, table  # noqa: E402  (beside this file)

ROWS = (
    "single",
    "single-unsmoothed",
    "ensemble",
    "ensemble-unsmoothed",
    "student",
    "student-smoothed",
    "student-of-unsmoothed",
)
# The `-unsmoothed` rows train with --label-smoothing 0: the default's 0.1 makes every model
# underconfident, which the log loss measures; they say whether a gain survives without it.
# `single-unsmoothed` is also the control of `student`: what `student` gains over `single` must
# not be only the smoothing it drops.
UNSMOOTHED = ["--label-smoothing", "0"]
SINGLES = {"single": [], "single-unsmoothed": UNSMOOTHED}
ENSEMBLES = {"ensemble": [], "ensemble-unsmoothed": UNSMOOTHED}
# Each student's teacher row and flags besides --teacher. The teacher's probabilities are already
# soft, so `student` adds no smoothing of its own; `student-smoothed` keeps the default 0.1.
STUDENTS = {
    "student": ("ensemble", UNSMOOTHED),
    "student-smoothed": ("ensemble", []),
    "student-of-unsmoothed": ("ensemble-unsmoothed", UNSMOOTHED),
}
# The verdict files `export-onnx --verdict` reads: an ensemble row against its recipe's single row.
VERDICTS = {
    "ensemble": ("single", "verdict.json"),
    "ensemble-unsmoothed": ("single-unsmoothed", "verdict-unsmoothed.json"),
}
RUN_ID = re.compile(r"\brun ([0-9a-f]{32})\b")
EXPERIMENT = "protocol"


class Protocol:
    """The work folder, the environment every `bitmoji` command runs in, and the step cache."""

    def __init__(self, work: Path, data_dir: Path, threads: int) -> None:
        self.work, self.data_dir, self.threads = work, data_dir, threads
        self.lists, self.cv_lists = work / "lists", work / "cv-lists"
        (work / "steps").mkdir(parents=True, exist_ok=True)
        (work / "models").mkdir(exist_ok=True)
        self.log = work / "commands.log"
        self.env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
        os.environ["MLFLOW_TRACKING_URI"] = self.env["MLFLOW_TRACKING_URI"]  # Store.open() below

    def bitmoji(self, *args: str) -> str:
        """Run `bitmoji ARGS` in the work folder (its mlruns/, models/, reports/ stay there);
        return its output, which is also appended to commands.log."""
        command = [sys.executable, "-m", "cli", *args]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=self.work, env=self.env, capture_output=True, text=True)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(
                f"$ bitmoji {' '.join(args)}  ({time.perf_counter() - started:.0f}s, exit {done.returncode})\n"
            )
            log.write(done.stdout + done.stderr)
        if done.returncode:
            sys.exit(f"bitmoji {' '.join(args)} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def step(self, name: str, action) -> dict:
        """`action()`'s result, cached in steps/NAME.json once it finished."""
        path = self.work / "steps" / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        result = action()
        path.write_text(json.dumps(result, indent=2) + "\n")
        return result


def run_id_in(output: str) -> str:
    """The last full MLflow run id a command printed (train: its run; cv: the parent run)."""
    found = RUN_ID.findall(output)
    if not found:
        sys.exit(f"no run id in the output:\n{output}")
    return found[-1]


def image_names(list_file: Path) -> set[str]:
    return {line.rpartition(" ")[0].rsplit("/", 1)[-1] for line in list_file.read_text().splitlines() if line}


def prepare_lists(p: Protocol) -> dict:
    """The fixed lists, and a lists folder whose labelled images are exactly the train list
    (`prepare` with another split seed, the val images excluded), checked image by image."""
    p.bitmoji(
        "prepare",
        "--data-dir",
        str(p.data_dir),
        "--lists",
        str(p.lists),
        "--seed",
        "0",
        "--val-fraction",
        "0.2",
    )
    val = image_names(p.lists / "val.txt")
    train = image_names(p.lists / "train.txt")
    excluded = p.work / "val_image_ids.csv"
    excluded.write_text("image_id\n" + "".join(f"{name}\n" for name in sorted(val)))
    p.bitmoji(
        "prepare",
        "--data-dir",
        str(p.data_dir),
        "--lists",
        str(p.cv_lists),
        "--seed",
        "1",
        "--exclude",
        str(excluded),
    )
    cv_images = image_names(p.cv_lists / "train.txt") | image_names(p.cv_lists / "val.txt")
    if cv_images != train or cv_images & val:
        sys.exit("the cv lists are not exactly the train list: the protocol would not be honest")
    return {"train": len(train), "val": len(val), "cv_images": len(cv_images)}


def export_last(p: Protocol, run_id: str, name: str) -> str:
    """The run's last-epoch checkpoint (no selection on the val list) as ONNX, not registered."""
    from bitmoji_ml.tracking.names import LAST_CHECKPOINT
    from bitmoji_ml.tracking.runs import download_run_checkpoint
    from bitmoji_ml.tracking.store import Store

    folder = p.work / "checkpoints" / name
    checkpoint = download_run_checkpoint(Store.open(), run_id=run_id, name=LAST_CHECKPOINT, folder=folder)
    output = p.work / "models" / f"{name}.onnx"
    p.bitmoji(
        "export-onnx",
        "--checkpoint",
        str(checkpoint),
        "--no-register",
        "--output",
        str(output),
        "--lists",
        str(p.lists),
    )
    return str(output)


def score(p: Protocol, model: str, name: str) -> dict:
    """`bitmoji evaluate` of `model` on the fixed val list."""
    folder = p.work / "evaluations" / name
    output = p.bitmoji(
        "evaluate", "--model", model, "--labels", str(p.lists / "val.txt"), "--lists", str(p.lists),
        "--output", str(folder), "--experiment", EXPERIMENT, "--threads", str(p.threads),
    )  # fmt: skip
    if "images this model trained on" in output:
        sys.exit(f"{name} trained on val images: the protocol is broken\n{output}")
    if "none of the" not in output:  # an ensemble's cv run records no dataset of its own
        print(f"  {name}: evaluate cannot tell its training images; prepare_lists checked them", flush=True)
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        "model": model,
        "errors": int(metrics["misclassified"]),
        "images": int(metrics["images"]),
        "accuracy": metrics["accuracy"],
        "log_loss": metrics["log_loss"],
    }


def train_args(p: Protocol, seed: int) -> list[str]:
    return [
        "--lists",
        str(p.lists),
        "--seed",
        str(seed),
        "--threads",
        str(p.threads),
        "--experiment",
        EXPERIMENT,
    ]


def single(p: Protocol, seed: int, row: str = "single") -> dict:
    name = f"{row}-seed{seed}"
    run_id = run_id_in(p.bitmoji("train", *train_args(p, seed), *SINGLES[row], "--run-name", name))
    return {"run_id": run_id, **score(p, export_last(p, run_id, name), name)}


def ensemble(p: Protocol, seed: int, row: str = "ensemble") -> dict:
    cv_args = ["--lists", str(p.cv_lists), "--seed", str(seed), "--threads", str(p.threads), *ENSEMBLES[row]]
    cv_name = f"cv-seed{seed}" if row == "ensemble" else f"{row}-cv-seed{seed}"
    run_id = run_id_in(p.bitmoji("cv", *cv_args, "--experiment", EXPERIMENT, "--run-name", cv_name))
    output = p.work / "models" / f"{row}-seed{seed}.onnx"
    export = ["export-onnx", "--cv-run", run_id, "--no-register", "--output", str(output)]
    p.bitmoji(*export, "--lists", str(p.cv_lists))
    return {"cv_run_id": run_id, **score(p, str(output), f"{row}-seed{seed}")}


def student(p: Protocol, seed: int, teacher: str, row: str) -> dict:
    name = f"{row}-seed{seed}"
    flags = [*train_args(p, seed), "--teacher", teacher, *STUDENTS[row][1], "--run-name", name]
    run_id = run_id_in(p.bitmoji("train", *flags))
    return {"run_id": run_id, "teacher": teacher, **score(p, export_last(p, run_id, name), name)}


def write_verdicts(p: Protocol, results: dict[str, dict[int, dict]], cost: dict, seeds: list[int]) -> None:
    """A verdict file per ensemble row whose single row ran (what `export-onnx --cv-run ID
    --verdict FILE` reads: export/verdict.py), then issue 19's rule (mean val errors no higher,
    mean log loss lower) applied to each pair of rows, over the seeds every row finished."""
    from bitmoji_ml.data.lists import read_manifest
    from bitmoji_ml.export.verdict import FORMAT
    from bitmoji_ml.serving.onnx_model import OnnxModel

    done = [s for s in seeds if all(s in by_seed for by_seed in results.values())]
    if not done:
        return
    means = {
        name: {key: statistics.fmean(by_seed[s][key] for s in done) for key in ("errors", "log_loss")}
        for name, by_seed in results.items()
    }
    compare(means, done)
    for row, (control, filename) in VERDICTS.items():
        if row not in results or control not in results:
            continue
        metadata = OnnxModel.load(results[row][done[0]]["model"]).metadata
        verdict = {
            "format": FORMAT,
            "recipe": json.loads(metadata["recipe"]),
            "folds": len(json.loads(metadata["ensemble_members"])),
            "seeds": done,
            "csv_sha256": read_manifest(p.lists)["csv_sha256"],
            "rows": {"single": control, "ensemble": row},
            "means": {"single": means[control], "ensemble": means[row]},
            "cost": {"single": cost.get(control, {}), "ensemble": cost.get(row, {})},
            "all_rows": {name: {str(s): r for s, r in by_seed.items()} for name, by_seed in results.items()},
        }
        path = p.work / filename
        path.write_text(json.dumps(verdict, indent=2) + "\n")
        print(f"wrote {path}: {row} vs {control}, for `export-onnx --cv-run ID --verdict {path}`")


def compare(means: dict[str, dict[str, float]], done: list[int]) -> None:
    """Each row against `single`, the unsmoothed rows against `single-unsmoothed`, each student
    against its teacher, by export/verdict.py's rule."""
    from bitmoji_ml.export.verdict import Verdict

    pairs = [(row, "single") for row in means if row != "single"]
    pairs += [
        (row, "single-unsmoothed") for row in ("ensemble-unsmoothed", "student", "student-of-unsmoothed")
    ]
    pairs += [(row, STUDENTS[row][0]) for row in means if row in STUDENTS]
    for row, other in [(row, other) for row, other in pairs if row in means and other in means]:
        rule = Verdict(Path(), {}, 0, done, "", {"single": means[other], "ensemble": means[row]}, {})
        print(
            f"{row} vs {other}, mean of seeds {done}: errors {means[row]['errors']:.2f} vs "
            f"{means[other]['errors']:.2f}, log loss {means[row]['log_loss']:.4f} vs "
            f"{means[other]['log_loss']:.4f}: " + ("better" if rule.ensemble_wins() else "not better")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("BITMOJI_DATA", "/work/shared/bitmoji"))
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bitmoji-protocol"))
    parser.add_argument("--threads", type=int, default=1, help="training/evaluate/predict threads")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--timing-rounds", type=int, default=3)
    args = parser.parse_args()
    rows = [row for row in args.rows.split(",") if row]
    if set(rows) - set(ROWS):
        sys.exit(f"--rows: choose among {', '.join(ROWS)}")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    p = Protocol(args.work.resolve(), args.data_dir.resolve(), args.threads)
    counts = p.step("lists", lambda: prepare_lists(p))
    print(f"lists: {counts['train']} train images (= the cv lists' images), {counts['val']} val images")
    results: dict[str, dict[int, dict]] = {row: {} for row in rows}
    for seed in seeds:
        for row in (row for row in rows if row in SINGLES):
            results[row][seed] = p.step(f"{row}-seed{seed}", lambda s=seed, r=row: single(p, s, r))
        needed = {row for row in rows if row in ENSEMBLES} | {
            STUDENTS[row][0] for row in rows if row in STUDENTS
        }
        teachers = {
            row: p.step(f"{row}-seed{seed}", lambda s=seed, r=row: ensemble(p, s, r))
            for row in ENSEMBLES
            if row in needed
        }
        for row in (row for row in rows if row in ENSEMBLES):
            results[row][seed] = teachers[row]
        for row in (row for row in rows if row in STUDENTS):
            step = lambda s=seed, m=teachers[STUDENTS[row][0]]["model"], r=row: student(p, s, m, r)  # noqa: E731
            results[row][seed] = p.step(f"{row}-seed{seed}", step)
    first = {name: by_seed[seeds[0]]["model"] for name, by_seed in results.items()}
    name = f"predict-cost-{'-'.join(first)}-seed{seeds[0]}-threads{args.threads}"
    cost = p.step(name, lambda: predict_cost(p, first, args.timing_rounds))
    print(table(results, cost))
    print(
        f"cost columns: seed {seeds[0]}'s models on {cost[next(iter(cost))]['images']} test images, "
        f"--threads {args.threads}; predict img/s (its own count, start-up excluded) and wall s "
        "(the whole command) are valid only on an otherwise idle machine, CPU ms/img holds up better"
    )
    write_verdicts(p, results, cost, seeds)


if __name__ == "__main__":
    main()
