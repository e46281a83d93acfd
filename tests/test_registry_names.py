"""One registered model per experiment, named after it: `export-onnx --experiment digits`
registers `digits` and moves `digits@champion`, leaving `bitmoji-gender@champion` (the default
experiment's) as it was, and `evaluate --experiment digits` scores `digits@champion`."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from bitmoji_ml import evaluation, paths
from bitmoji_ml.export.job import export_job
from bitmoji_ml.recipe import resolve_recipe
from bitmoji_ml.tracking.store import Store
from bitmoji_ml.training import train_job

DIGITS = "digits"


def train_and_export(store: Store, lists: Path, experiment: str, output: Path):
    """A 1-epoch run in `experiment`, exported (and registered) with `--experiment experiment`."""
    recipe = resolve_recipe(overrides={"epochs": 1, "batch_size": 16, "threads": 1})
    trained = train_job(lists_dir=lists, experiment=experiment, recipe=recipe, store=store)
    export = export_job(output=output, experiment=experiment, lists_dir=lists, store=store)
    return trained, export


def test_an_experiments_export_registers_its_own_model_and_leaves_the_default_champion(
    mlflow_store: str, tiny_lists: Path, tmp_path: Path
):
    store, client = Store.open(), MlflowClient(tracking_uri=mlflow_store)
    default_run, default_export = train_and_export(store, tiny_lists, paths.EXPERIMENT, tmp_path / "b.onnx")
    assert default_export.registration.registered_model == "bitmoji-gender"
    before = client.get_model_version_by_alias("bitmoji-gender", "champion")

    digits_run, digits_export = train_and_export(store, tiny_lists, DIGITS, tmp_path / "d.onnx")

    outcome = digits_export.registration
    assert (outcome.registered_model, outcome.version, outcome.before, outcome.moved) == (
        DIGITS,
        "1",
        None,
        True,
    )
    champion = client.get_model_version_by_alias(DIGITS, "champion")
    assert (str(champion.version), champion.run_id) == ("1", digits_run.run_id)
    after = client.get_model_version_by_alias("bitmoji-gender", "champion")
    assert (after.version, after.run_id, after.source) == (before.version, default_run.run_id, before.source)
    assert [str(v.version) for v in client.search_model_versions("name = 'bitmoji-gender'")] == ["1"]

    scored = evaluation.evaluate_job(lists_dir=tiny_lists, experiment=DIGITS, threads=1, store=store)
    assert client.get_run(scored.run_id).data.params["evaluated_model"] == f"models:/{DIGITS}/1"
    scored = evaluation.evaluate_job(lists_dir=tiny_lists, threads=1, store=store)  # the default
    assert client.get_run(scored.run_id).data.params["evaluated_model"] == "models:/bitmoji-gender/1"


def test_exporting_a_run_under_another_experiment_s_name_says_so(
    mlflow_store: str, tiny_lists: Path, tmp_path: Path, caplog
):
    store = Store.open()
    recipe = resolve_recipe(overrides={"epochs": 1, "batch_size": 16, "threads": 1})
    digits_run = train_job(lists_dir=tiny_lists, experiment=DIGITS, recipe=recipe, store=store)
    with caplog.at_level("WARNING", logger="bitmoji_ml.export.register"):
        export = export_job(
            output=tmp_path / "m.onnx", run_id=digits_run.run_id, lists_dir=tiny_lists, store=store
        )
    assert export.registration.registered_model == paths.EXPERIMENT  # --experiment names it
    assert (
        f"run {digits_run.run_id} is in experiment digits but registers as bitmoji-gender (--experiment); "
        "pass --experiment digits" in caplog.text
    )
