"""`bitmoji runs`: the experiment's runs as a table, or some of them side by side."""

from __future__ import annotations

from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands.options import Experiment, friendly
from bitmoji_ml.errors import BitmojiError


@friendly
def runs(
    ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID", help="Only these runs (ids or unique prefixes)", show_default=False),
    ] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Show the given runs side by side")] = False,
    evaluations: Annotated[
        bool, typer.Option("--evaluations", help="List the evaluation runs instead")
    ] = False,
    experiment: Experiment = paths.EXPERIMENT,
) -> None:
    """Table of the experiment's training runs, best validation accuracy first.

    `bitmoji runs --compare ID ID ...` shows those runs field by field."""
    from bitmoji_ml import comparison
    from bitmoji_ml.report import format_table
    from bitmoji_ml.tracking.listing import experiment_runs
    from bitmoji_ml.tracking.store import Store

    if compare and not ids:
        raise BitmojiError(
            "--compare needs run ids: `bitmoji runs --compare ID ID` (ids from `bitmoji runs`)"
        )
    store = Store.open()
    found = experiment_runs(store, experiment=experiment)
    if compare:  # any runs side by side, training or evaluation
        chosen = comparison.select_runs(found.training + found.evaluations, ids)
        typer.echo(format_table(*comparison.compare_table(chosen)))
        return
    listed = found.evaluations if evaluations else found.training
    if ids:
        listed = comparison.select_runs(listed, ids)
    kind = "evaluation runs" if evaluations else "training runs"
    if not listed:
        hint = "run `bitmoji evaluate`" if evaluations else "run `bitmoji train`"
        raise BitmojiError(f"no {kind} yet in experiment {experiment!r}: {hint}")
    table = comparison.evaluations_table if evaluations else comparison.runs_table
    typer.echo(format_table(*table(listed)))
    note = (
        ""
        if evaluations or not found.evaluations
        else f"; {len(found.evaluations)} evaluation run(s): --evaluations"
    )
    typer.echo(f"{len(listed)} {kind} in {experiment} ({store.uri}){note}")
