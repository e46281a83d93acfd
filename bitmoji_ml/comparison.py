"""`bitmoji runs`: the experiment's runs as tables, from plain `RunRecord`s (see
tracking.listing), so the ordering, the run tree and the comparison need no MLflow.

The default table is lean (one line per top-level run, about 120 characters); `columns` adds
any `params.*`, `metrics.*` or `tags.*` field, named as in MLflow's search syntax."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Sequence

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.tracking.listing import RunRecord
from bitmoji_ml.tracking.names import CLASSES_PARAM, TRAINING_IMAGES_TAG

COMPARED_TAGS = ("model", "device", "parameters", "data_digest", "git_commit", "torch_version")
# f1 and roc_auc are two-class scores; a model of more classes has macro_f1 instead.
EVALUATION_METRICS = ("accuracy", "f1", "macro_f1", "roc_auc", "log_loss")
ID_WIDTH = 8
NAME_WIDTH = 38
TAG_WIDTH = 12  # digests and commits: enough to tell apart
VALUE_WIDTH = 48  # a longer value (a tune run's search_space) is cut: the UI shows it whole
FIELD_PREFIXES = ("params.", "metrics.", "tags.")
# The accuracy a run is judged by, first one present wins, with what it was measured on:
# a training run's best epoch on the val list, a cv run's out-of-fold predictions, a tune run's
# best trial (tune logs best_trial_*, never best_val_*), a fold's or refit's last epoch.
ACCURACY_METRICS = (
    ("best_val_acc", "best_val_loss", "val"),
    ("oof_acc", "cv_loss", "oof"),
    ("best_trial_oof_acc", "best_trial_cv_loss", "tune oof"),
    ("best_trial_val_acc", "best_trial_val_loss", "tune val"),
    ("final_val_acc", "final_val_loss", "last val"),
)


def accuracy(run: RunRecord) -> tuple[float | None, float | None, str]:
    """(accuracy, its loss, what it was measured on) of `run`; (None, None, "-") without one."""
    for accuracy_key, loss_key, measured_on in ACCURACY_METRICS:
        if accuracy_key in run.metrics:
            return run.metrics[accuracy_key], run.metrics.get(loss_key), measured_on
    return None, None, "-"


def differing_params(runs: Sequence[RunRecord]) -> list[str]:
    """Param keys whose values (after --resume changes) are not all equal across `runs` (a
    missing key counts as a value)."""
    settings = [run.settings for run in runs]
    keys = sorted({key for values in settings for key in values})
    return [key for key in keys if len({values.get(key) for values in settings}) > 1]


def sort_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Best accuracy first, ties by lower loss; runs without results last."""

    def key(run: RunRecord) -> tuple[bool, float, float]:
        value, loss, _ = accuracy(run)
        return (value is None, -(value or 0.0), float("inf") if loss is None else loss)

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


# --- the run tree ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Arranged:
    """The runs to list, each with its depth in the run tree (0: top level), and how many of
    the given runs are left out (child runs, unless asked for)."""

    rows: list[tuple[int, RunRecord]]
    hidden: int


def arrange(runs: Sequence[RunRecord], *, children: bool = False, parent: str = "") -> Arranged:
    """Top-level runs, best first; with `children`, each followed by its child runs (folds,
    trials, a trial's folds) in the order they started. With `parent` (a run id), that run's
    children and their own children only."""
    by_parent: dict[str, list[RunRecord]] = {}
    for run in sorted(runs, key=lambda run: run.start_time):
        by_parent.setdefault(run.parent_run_id, []).append(run)
    listed = {run.run_id for run in runs}
    if parent:
        roots, children = by_parent.get(parent, []), True
    else:
        # With `children`, a child whose parent a filter left out is listed at the top level.
        roots = sort_runs(
            [run for run in runs if not run.parent_run_id or (children and run.parent_run_id not in listed)]
        )
    rows: list[tuple[int, RunRecord]] = []

    def add(run: RunRecord, depth: int) -> None:
        rows.append((depth, run))
        if children:
            for child in by_parent.get(run.run_id, []):
                add(child, depth + 1)

    for root in roots:
        add(root, 0)
    return Arranged(rows, len(runs) - len(rows))


# --- the runs table --------------------------------------------------------------------------


def _started(run: RunRecord, layout: str = "%m-%d %H:%M") -> str:
    if not run.start_time:
        return "-"
    return datetime.datetime.fromtimestamp(run.start_time / 1000).strftime(layout)


def _name(run: RunRecord, depth: int) -> str:
    name = "  " * depth + run.name
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 1] + "…"


def _number(value: float | None, kind: type = float) -> object:
    if value is None:
        return "-"
    return int(round(value)) if kind is int else float(value)


def _model(run: RunRecord) -> str:
    """The run's model; a tune run's when its command fixed one (`fixed.model`), else "-"."""
    return run.tags.get("model") or run.params.get("model") or run.params.get("fixed.model", "-")


def _epochs(run: RunRecord) -> object:
    """Epochs trained (after any --resume); a cv run or cv trial: the epochs of each fold."""
    if "epochs_run" in run.metrics:
        return _number(run.metrics["epochs_run"], int)
    epochs = run.settings.get("epochs", "")
    return int(epochs) if run.kind in ("cv", "trial") and epochs.isdigit() else "-"


Cell = Callable[[RunRecord, int], object]  # (run, depth in the tree) -> value
COLUMNS: dict[str, tuple[str, Cell]] = {  # name: (header, value)
    "run": ("run", lambda run, depth: run.run_id[:ID_WIDTH]),
    "name": ("name", _name),
    "kind": ("kind", lambda run, depth: run.kind),
    "model": ("model", lambda run, depth: _model(run)),
    # The class names in output order; "-" for a run from before they were recorded (Bitmoji's).
    "classes": ("classes", lambda run, depth: run.params.get(CLASSES_PARAM, "-")),
    "epochs": ("epochs", lambda run, depth: _epochs(run)),
    "accuracy": ("accuracy", lambda run, depth: _number(accuracy(run)[0])),
    "on": ("acc on", lambda run, depth: accuracy(run)[2]),
    "loss": ("loss", lambda run, depth: _number(accuracy(run)[1])),
    "seconds": ("train s", lambda run, depth: _number(run.metrics.get("train_seconds"), int)),
    "status": ("status", lambda run, depth: run.status),
    "started": ("started", lambda run, depth: _started(run)),
    "parent": ("parent", lambda run, depth: run.parent_run_id[:ID_WIDTH] or "-"),
}
DEFAULT_COLUMNS = ("run", "name", "kind", "model", "epochs", "accuracy", "on", "status", "started")


def parse_columns(text: str | None) -> list[str]:
    """`--columns`: a comma-separated list of column names and `params.X` / `metrics.X` /
    `tags.X` fields; a list whose first item starts with `+` is added to the default columns."""
    if not text:
        return list(DEFAULT_COLUMNS)
    items = [item.strip() for item in text.split(",") if item.strip()]
    added = bool(items) and items[0].startswith("+")
    items = [item.lstrip("+") for item in items]
    unknown = [item for item in items if item not in COLUMNS and not item.startswith(FIELD_PREFIXES)]
    if unknown or not items:
        raise BitmojiError(
            f"--columns {text!r}: unknown column(s) {', '.join(unknown) or '(none given)'}; use "
            f"{', '.join(COLUMNS)}, or params.X, metrics.X, tags.X (a leading + adds to the default)"
        )
    return [*DEFAULT_COLUMNS, *items] if added else items


def _field(run: RunRecord, field: str) -> object:
    """params.X (as last trained: resumed.X over X), metrics.X or tags.X of `run`, or "-"."""
    source, _, key = field.partition(".")
    if source == "metrics":
        return _number(run.metrics.get(key))
    values = run.settings if source == "params" else run.tags
    return values.get(key, "-")


def runs_table(arranged: Arranged, columns: Sequence[str] = DEFAULT_COLUMNS) -> tuple[list[str], list[list]]:
    """Headers and rows of `bitmoji runs` for the arranged runs."""
    headers = [COLUMNS[column][0] if column in COLUMNS else column for column in columns]
    rows = [
        [COLUMNS[column][1](run, depth) if column in COLUMNS else _field(run, column) for column in columns]
        for depth, run in arranged.rows
    ]
    return headers, rows


def evaluations_table(runs: Sequence[RunRecord]) -> tuple[list[str], list[list[object]]]:
    """Headers and rows for the evaluation runs: what was scored on what, how many of the
    scored images the model trained on ("unknown" when it could not be told), and how well."""
    headers = ["run", "name", "evaluated model", "images", "trained on", *EVALUATION_METRICS]
    rows = [
        [
            run.run_id[:ID_WIDTH],
            run.name,
            run.tags.get("evaluated_model", "-"),
            _number(run.metrics.get("images"), int),
            run.tags.get(TRAINING_IMAGES_TAG, "-"),
            *(_number(run.metrics.get(key)) for key in EVALUATION_METRICS),
        ]
        for run in sort_evaluations(runs)
    ]
    return headers, rows


# --- runs side by side -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Comparison:
    """`bitmoji runs --compare`: one column per run, one row per field, and how many fields
    were left out because every run has the same value."""

    headers: list[str]
    rows: list[list[str]]
    same: int


def _value(value: object) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.6g}"
    text = "-" if value is None else str(value)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def _param(run: RunRecord, key: str) -> str:
    """A param as the run last trained with it, and the original when --resume changed it."""
    value, original = run.settings.get(key), run.params.get(key)
    if value is not None and original is not None and value != original:
        return f"{value} (resumed; was {original})"
    return _value(value)


def compare_fields(runs: Sequence[RunRecord]) -> list[list[str]]:
    """Every field of `runs`, named as in MLflow's search syntax: [field, value per run]."""
    metric_keys = sorted({key for run in runs for key in run.metrics})
    param_keys = sorted({key for run in runs for key in run.settings})
    rows = [
        ["name", *(run.name for run in runs)],
        ["kind", *(run.kind for run in runs)],
        ["status", *(run.status for run in runs)],
        ["started", *(_started(run, "%Y-%m-%d %H:%M") for run in runs)],
    ]
    rows += [[f"metrics.{key}", *(_value(run.metrics.get(key)) for run in runs)] for key in metric_keys]
    rows += [[f"params.{key}", *(_param(run, key) for run in runs)] for key in param_keys]
    rows += [
        [f"tags.{key}", *(_value(run.tags.get(key))[:TAG_WIDTH] for run in runs)]
        for key in COMPARED_TAGS
        if any(key in run.tags for run in runs)
    ]
    return rows


def compare_table(runs: Sequence[RunRecord], *, all_fields: bool = False) -> Comparison:
    """The runs side by side: the fields whose values differ (the name always; every field
    with `all_fields` or a single run, marking the differing ones with `*`)."""
    rows, shown = compare_fields(runs), []
    for field, *values in rows:
        differs = len(set(values)) > 1
        if all_fields or len(runs) == 1:
            shown.append([field + (" *" if differs else ""), *values])
        elif differs or field == "name":
            shown.append([field, *values])
    return Comparison(["field", *(run.run_id[:ID_WIDTH] for run in runs)], shown, len(rows) - len(shown))
