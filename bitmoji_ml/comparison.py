"""`bitmoji runs`: the experiment's runs as tables, from plain `RunRecord`s (see
tracking.listing), so the ordering and the differing-params logic need no MLflow."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.tracking.listing import RunRecord

SHOWN_PARAMS = {"model"}  # already a column of the runs table
COMPARED_TAGS = ("device", "parameters", "data_digest", "git_commit", "torch_version")
EVALUATION_METRICS = ("accuracy", "f1", "roc_auc", "log_loss")
ID_WIDTH = 8
TAG_WIDTH = 12  # digests and commits: enough to tell apart


def differing_params(runs: Sequence[RunRecord]) -> list[str]:
    """Param keys whose values are not all equal across `runs` (a missing key counts as a value)."""
    keys = sorted({key for run in runs for key in run.params})
    return [key for key in keys if len({run.params.get(key) for run in runs}) > 1]


def sort_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Best validation accuracy first, ties by lower validation loss; runs without results last."""

    def key(run: RunRecord) -> tuple[bool, float, float]:
        metrics = run.metrics
        accuracy, loss = metrics.get("best_val_acc"), metrics.get("best_val_loss")
        return (accuracy is None, -(accuracy or 0.0), float("inf") if loss is None else loss)

    return sorted(runs, key=key)


def sort_evaluations(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Highest accuracy first, ties by lower log loss."""
    return sorted(
        runs,
        key=lambda run: (-run.metrics.get("accuracy", -1.0), run.metrics.get("log_loss", float("inf"))),
    )


def select_runs(runs: Sequence[RunRecord], ids: Sequence[str]) -> list[RunRecord]:
    """The runs named by full ids or unique prefixes, in the order given."""
    chosen = []
    for wanted in ids:
        matches = [run for run in runs if run.run_id.startswith(wanted)]
        if not matches:
            raise BitmojiError(
                f"no run {wanted!r} in this experiment (ids are in the `run` column of `bitmoji runs`)"
            )
        if len(matches) > 1:
            raise BitmojiError(f"run id prefix {wanted!r} matches {len(matches)} runs: give more characters")
        chosen.append(matches[0])
    return chosen


def _metric(run: RunRecord, key: str, kind: type = float) -> object:
    value = run.metrics.get(key)
    return "-" if value is None else kind(round(value)) if kind is int else float(value)


def runs_table(runs: Sequence[RunRecord]) -> tuple[list[str], list[list[object]]]:
    """Headers and rows of `bitmoji runs`: fixed columns, then the params that differ."""
    varying = [key for key in differing_params(runs) if key not in SHOWN_PARAMS]
    headers = [
        "run",
        "name",
        "model",
        "status",
        "epochs run",
        "best val acc",
        "val loss",
        "train s",
        *varying,
    ]
    rows = [
        [
            run.run_id[:ID_WIDTH],
            run.name,
            run.tags.get("model") or run.params.get("model", "-"),
            run.status,
            _metric(run, "epochs_run", int),
            _metric(run, "best_val_acc"),
            _metric(run, "best_val_loss"),
            _metric(run, "train_seconds", int),
            *(run.params.get(key, "-") for key in varying),
        ]
        for run in sort_runs(runs)
    ]
    return headers, rows


def evaluations_table(runs: Sequence[RunRecord]) -> tuple[list[str], list[list[object]]]:
    """Headers and rows for the evaluation runs: what was scored on what, and how well."""
    headers = ["run", "name", "evaluated model", "images", *EVALUATION_METRICS]
    rows = [
        [
            run.run_id[:ID_WIDTH],
            run.name,
            run.tags.get("evaluated_model", "-"),
            _metric(run, "images", int),
            *(_metric(run, key) for key in EVALUATION_METRICS),
        ]
        for run in sort_evaluations(runs)
    ]
    return headers, rows


def _started(run: RunRecord) -> str:
    if not run.start_time:
        return "-"
    moment = datetime.datetime.fromtimestamp(run.start_time / 1000)
    return moment.strftime("%Y-%m-%d %H:%M")


def _value(value: object) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.6g}"
    return "-" if value is None else str(value)


def compare_table(runs: Sequence[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """The runs side by side: one column per run, one row per field (named as in MLflow's search
    syntax); `*` marks the params that differ."""
    varying = set(differing_params(runs))
    metric_keys = sorted({key for run in runs for key in run.metrics})
    param_keys = sorted({key for run in runs for key in run.params})
    rows: list[list[str]] = [
        ["name", *(run.name for run in runs)],
        ["status", *(run.status for run in runs)],
        ["started", *(_started(run) for run in runs)],
    ]
    rows += [[f"metrics.{key}", *(_value(run.metrics.get(key)) for run in runs)] for key in metric_keys]
    rows += [
        [
            f"params.{key}" + (" *" if key in varying else ""),
            *(_value(run.params.get(key)) for run in runs),
        ]
        for key in param_keys
    ]
    rows += [
        [f"tags.{key}", *(_value(run.tags.get(key))[:TAG_WIDTH] for run in runs)]
        for key in ("model", *COMPARED_TAGS)
        if any(key in run.tags for run in runs)
    ]
    return ["field", *(run.run_id[:ID_WIDTH] for run in runs)], rows
