"""The `bitmoji` command line: the Typer app, assembled from the command modules in
`bitmoji_ml/commands/` (one per area). `python -m cli` and the `bitmoji` script both run it."""

from __future__ import annotations

import atexit
import gc
import sys
from typing import Annotated

import typer

from bitmoji_ml.commands import data, export, predict, runs, select, serve, train

app = typer.Typer(
    help="Train, track, export and serve a gender classifier for Bitmoji faces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: it re-wraps text to the terminal and shows no <bool> placeholder for flags.
    rich_markup_mode=None,
)


def print_version(value: bool) -> None:
    """Eager --version: print and exit before any command runs."""
    if value:
        from bitmoji_ml import __version__

        typer.echo(f"bitmoji-ml {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit", callback=print_version, is_eager=True),
    ] = False,
) -> None:
    """Train, track, export and serve a gender classifier for Bitmoji faces."""
    from bitmoji_ml.console import configure_logging

    configure_logging()


# At exit, before the interpreter tears the modules down: move every object out of the cyclic
# collector's reach, so shutdown does not walk torch's and MLflow's object graphs (~2 s after a
# training run, ~0.2 s with this). Files are closed by their `with` blocks, never left to it.
atexit.register(gc.freeze)

app.command()(data.prepare)
app.command()(train.train)
app.command()(select.cv)
app.command()(select.audit)
app.command()(select.tune)
app.command("export-onnx")(export.export_onnx)
app.command()(predict.predict)
app.command()(predict.evaluate)
app.command()(runs.runs)
app.command()(serve.ui)
app.command()(serve.serve)


def main() -> None:
    """Entry point for `python cli.py`."""
    app(prog_name="bitmoji")


if __name__ == "__main__":
    sys.exit(main())
