"""One temp MLflow store holding two short training runs (one exported as @champion on demand),
built once per test session and shared by test_evaluation, test_runs and test_server:
training and export are the slow part, and each test only reads the runs or adds its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import copy_store, make_dataset

EXPERIMENT = "test-exp"


@dataclasses.dataclass
class TrainedStore:
    """Where the store and data are, and what is in it."""

    uri: str
    lists: Path
    dataset: Path
    run_ids: list[str]
    onnx: Path | None = None


_built: dict[str, TrainedStore] = {}


def trained_store(tmp_path_factory: pytest.TempPathFactory, template_db: Path) -> TrainedStore:
    """The shared store with two 1-epoch runs that differ in batch_size and lr."""
    if "store" in _built:
        return _built["store"]
    from bitmoji_ml.data.dataset import load_dataset
    from bitmoji_ml.data.lists import write_lists
    from bitmoji_ml.recipe import resolve_recipe
    from bitmoji_ml.tracking.store import Store
    from bitmoji_ml.training import train_job

    folder = tmp_path_factory.mktemp("trained-store")
    uri = copy_store(template_db, folder)
    dataset = make_dataset(folder / "bitmoji")
    lists = folder / "lists"
    write_lists(load_dataset(dataset), lists, val_fraction=0.25, seed=0)
    run_ids, store = [], Store.open(uri)
    for overrides in ({"batch_size": 16}, {"batch_size": 8, "lr": 0.01}):
        settings = {"epochs": 1, "threads": 1, **overrides}
        result = train_job(
            lists_dir=lists, experiment=EXPERIMENT, recipe=resolve_recipe(overrides=settings), store=store
        )
        run_ids.append(result.run_id)
    _built["store"] = TrainedStore(uri, lists, dataset, run_ids)
    return _built["store"]


def exported_store(tmp_path_factory: pytest.TempPathFactory, template_db: Path) -> TrainedStore:
    """The shared store with its first run exported to ONNX and registered as @champion."""
    store = trained_store(tmp_path_factory, template_db)
    if store.onnx is None:
        from bitmoji_ml.export.job import export_job
        from bitmoji_ml.tracking.store import Store

        onnx = Path(store.uri[len("sqlite:///") :]).parent.parent / "m.onnx"
        export_job(
            output=onnx,
            run_id=store.run_ids[0],
            experiment=EXPERIMENT,
            lists_dir=store.lists,
            store=Store.open(store.uri),
        )
        store.onnx = onnx
    return store
