"""The `bitmoji` command line: one small function per stage. Parse, call the library, print.

Heavy libraries (torch, mlflow, onnxruntime) are imported inside the commands that need them,
so `bitmoji --help`, `prepare` and `predict` start fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.errors import BitmojiError

app = typer.Typer(
    help="Train, track, export and serve a gender classifier for Bitmoji faces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDir = Annotated[
    Path | None,
    typer.Option(help="Kaggle dataset folder [default: $BITMOJI_DATA, ../shared/bitmoji, data/bitmoji]"),
]
ListsDir = Annotated[Path, typer.Option("--lists", help="Folder with the lists from `prepare`")]
Experiment = Annotated[str, typer.Option(help="MLflow experiment name")]


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit")] = False,
) -> None:
    """Train, track, export and serve a gender classifier for Bitmoji faces."""
    if version:
        from bitmoji_ml import __version__

        typer.echo(f"bitmoji-ml {__version__}")
        raise typer.Exit()


def friendly(command: Callable) -> Callable:
    """Turn a BitmojiError into a one-line message on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BitmojiError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@friendly
def prepare(
    data_dir: DataDir = None,
    out: Annotated[Path, typer.Option(help="Where to write the lists")] = paths.LISTS_DIR,
    val_fraction: Annotated[float, typer.Option(help="Share of labelled images for validation")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the stratified split")] = 0,
    split: Annotated[str, typer.Option(help="stratified, or head (the seed's first-80 % split)")] = "stratified",
) -> None:
    """Check the dataset and write train/val/test lists plus manifest.json."""
    from bitmoji_ml.data.dataset import load_dataset
    from bitmoji_ml.data.lists import write_lists
    from bitmoji_ml.report import format_table

    root = paths.resolve_data_dir(data_dir)
    dataset = load_dataset(root)
    manifest = write_lists(dataset, out, val_fraction=val_fraction, seed=seed, split=split)
    balance = manifest["class_balance"]
    rows = [
        [name, balance[name]["images"], balance[name]["male"], balance[name]["female"],
         f"{balance[name]['male_share']:.1%}"]
        for name in ("train", "val")
    ] + [["test", manifest["counts"]["test"], "-", "-", "-"]]
    typer.echo(f"dataset {root} ({split} split, seed {seed}, val fraction {val_fraction})")
    typer.echo(format_table(["split", "images", "male", "female", "male share"], rows))
    typer.echo(f"wrote {out}/train.txt, val.txt, test.txt, manifest.json (digest {manifest['digest'][:12]})")


def main() -> None:
    """Entry point for `python cli.py`."""
    app(prog_name="bitmoji")


if __name__ == "__main__":
    sys.exit(main())
