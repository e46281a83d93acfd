"""`bitmoji prepare`: check a dataset (Kaggle's Bitmoji layout, one folder per class, or a labels
CSV) and write the lists."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bitmoji_ml import paths
from bitmoji_ml.commands import views
from bitmoji_ml.commands.options import DataDir, ImageColumn, LabelColumn, friendly


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
    layout: Annotated[
        str | None,
        typer.Option(help="kaggle, folders or csv (default: detected from the folder and --labels)"),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="csv layout: the CSV of image file (relative to --data-dir) and label"),
    ] = None,
    image_column: ImageColumn = None,
    label_column: LabelColumn = None,
    classes: Annotated[
        str | None,
        typer.Option(help="folders/csv: the class names in this order, a,b,c (default: sorted)"),
    ] = None,
    unlabelled: Annotated[
        Path | None,
        typer.Option(
            help="folders/csv: a folder of unlabelled images, written as the test list (Kaggle: testimages/)"
        ),
    ] = None,
) -> None:
    """Check the dataset and write train/val(/test) lists plus manifest.json."""
    from bitmoji_ml.data.dataset import read_exclusions
    from bitmoji_ml.data.layouts import Source, load_source, parse_classes
    from bitmoji_ml.data.lists import write_lists

    # A labels CSV names its images relative to --data-dir, else to its own folder.
    if data_dir is None and labels is not None:
        root = Path(labels).resolve().parent
    else:
        root = paths.resolve_data_dir(data_dir)
    source = Source(root, layout, labels, image_column, label_column, parse_classes(classes), unlabelled)
    excluded = read_exclusions(exclude) if exclude is not None else None
    dataset = load_source(source)
    manifest = write_lists(
        dataset, lists, val_fraction=val_fraction, seed=seed, split=split, excluded=excluded
    )
    views.show_prepare(
        manifest, root=root, lists=lists, split=split, seed=seed, val_fraction=val_fraction, excluded=excluded
    )
