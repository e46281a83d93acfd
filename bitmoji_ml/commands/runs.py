"""`bitmoji runs`: the experiment's runs as a table, or some of them side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands.options import Experiment, friendly
from bitmoji_ml.errors import BitmojiError

if TYPE_CHECKING:
    from bitmoji_ml.tracking.listing import ExperimentRuns


@friendly
def runs(
    ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID", help="Only these runs (ids or unique prefixes)", show_default=False),
    ] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="Show the given runs side by side, the fields that differ")
    ] = False,
    all_fields: Annotated[
        bool, typer.Option("--all-fields", help="With --compare: every field, `*` marks those that differ")
    ] = False,
    children: Annotated[
        bool,
        typer.Option("--children", help="Also list child runs (cv folds, tune trials) under their parent"),
    ] = False,
    parent: Annotated[
        str | None, typer.Option(help="List the child runs of this run (id or unique prefix)")
    ] = None,
    filter_string: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help="MLflow search filter, e.g. \"params.model = 'hybrid' and metrics.best_val_acc > 0.99\"",
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated columns: run, name, kind, model, classes, epochs, accuracy, on, loss, seconds, "
            "status, started, parent, or params.X / metrics.X / tags.X; +X,Y adds X and Y to the default"
        ),
    ] = None,
    evaluations: Annotated[
        bool, typer.Option("--evaluations", help="List the evaluation runs instead")
    ] = False,
    experiment: Experiment = paths.EXPERIMENT,
) -> None:
    """Table of the experiment's runs (top level: train, refit, torchrun, cv, tune), best first.

    The accuracy is the best epoch's on the val list for a training run, the out-of-fold one for
    a cv run, the best trial's for a tune run (`acc on` says which). `bitmoji runs --compare ID
    ID ...` shows those runs field by field."""
    from bitmoji_ml import comparison
    from bitmoji_ml.report import format_table
    from bitmoji_ml.tracking.listing import experiment_runs
    from bitmoji_ml.tracking.store import Store

    if compare and not ids:
        raise BitmojiError(
            "--compare needs run ids: `bitmoji runs --compare ID ID` (ids from `bitmoji runs`)"
        )
    shown_columns = comparison.parse_columns(columns)
    store = Store.open()
    found = experiment_runs(store, experiment=experiment, filter_string=filter_string or "")
    if compare:  # any runs side by side, training or evaluation
        chosen = comparison.select_runs(found.training + found.evaluations, ids)
        table = comparison.compare_table(chosen, all_fields=all_fields)
        typer.echo(format_table(table.headers, table.rows))
        if table.same:
            typer.echo(f"{table.same} field(s) with the same value in every run not shown: --all-fields")
        return
    if evaluations:
        _evaluations(found, ids=ids, filter_string=filter_string)
        return
    _training(found, ids=ids, children=children, parent=parent, columns=shown_columns, store_uri=store.uri)


def _training(
    found: ExperimentRuns,
    *,
    ids: list[str] | None,
    children: bool,
    parent: str | None,
    columns: list[str],
    store_uri: str,
) -> None:
    """The table of training runs (top level, or the tree under `parent`) and a summary line."""
    from bitmoji_ml import comparison
    from bitmoji_ml.report import format_table

    listed = comparison.select_runs(found.training, ids) if ids else found.training
    parent_id = comparison.select_runs(found.training, [parent])[0].run_id if parent else ""
    arranged = comparison.arrange(listed, children=children or bool(ids), parent=parent_id)
    if not arranged.rows:
        where = f"under run {parent_id}" if parent else f"in experiment {found.experiment!r}"
        raise BitmojiError(f"no training runs {where}: run `bitmoji train` (or change --filter)")
    typer.echo(format_table(*comparison.runs_table(arranged, columns)))
    notes = [f"{len(arranged.rows)} run(s) in {found.experiment} ({store_uri})"]
    if arranged.hidden and not parent:
        notes.append(f"{arranged.hidden} child run(s) (cv folds, tune trials) not shown: --children")
    if found.evaluations:
        notes.append(f"{len(found.evaluations)} evaluation run(s): --evaluations")
    typer.echo("; ".join(notes))


def _evaluations(found: ExperimentRuns, *, ids: list[str] | None, filter_string: str | None) -> None:
    """The table of evaluation runs and the experiment they are in."""
    from bitmoji_ml import comparison
    from bitmoji_ml.report import format_table

    listed = comparison.select_runs(found.evaluations, ids) if ids else found.evaluations
    if not listed:
        matching = " matching --filter" if filter_string else ""
        raise BitmojiError(
            f"no evaluation runs{matching} in {found.evaluations_experiment!r}: run `bitmoji evaluate`"
        )
    typer.echo(format_table(*comparison.evaluations_table(listed)))
    older = (
        f" (and {found.legacy_evaluations} that an older version logged in {found.experiment})"
        if found.legacy_evaluations
        else ""
    )
    count = len(found.evaluations) - found.legacy_evaluations
    typer.echo(f"{count} evaluation run(s) in {found.evaluations_experiment}{older}")
