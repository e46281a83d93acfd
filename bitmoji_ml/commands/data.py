"""`bitmoji prepare`: check a dataset and write the lists."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands import views
from bitmoji_ml.commands.options import DataDir, friendly


@friendly
def prepare(
    data_dir: DataDir = None,
    lists: Annotated[
        Path,
        typer.Option(
            "--lists", help="Folder to write the lists to (train, export-onnx and evaluate read it)"
        ),
    ] = paths.LISTS_DIR,
    val_fraction: Annotated[float, typer.Option(help="Share of labelled images for validation")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the stratified split")] = 0,
    split: Annotated[
        str, typer.Option(help="stratified, or head (the seed's first-80 % split)")
    ] = "stratified",
    exclude: Annotated[
        Path | None,
        typer.Option(
            help="CSV with an image_id column (e.g. the audit's label_issues.csv, after looking at the "
            "faces): leave those images out of the lists; recorded in manifest.json"
        ),
    ] = None,
) -> None:
    """Check the dataset and write train/val/test lists plus manifest.json."""
    from bitmoji_ml.data.dataset import load_dataset, read_exclusions
    from bitmoji_ml.data.lists import write_lists

    root = paths.resolve_data_dir(data_dir)
    excluded = read_exclusions(exclude) if exclude is not None else None
    dataset = load_dataset(root)
    manifest = write_lists(
        dataset, lists, val_fraction=val_fraction, seed=seed, split=split, excluded=excluded
    )
    views.show_prepare(
        manifest, root=root, lists=lists, split=split, seed=seed, val_fraction=val_fraction, excluded=excluded
    )
