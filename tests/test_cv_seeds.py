"""`bitmoji cv --seeds` on a tiny generated dataset: one cv run per seed, the spread over the
seeds, and the flags it refuses. One call (2 seeds x 2 folds) is shared by the module."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_store, make_dataset
from mlflow import MlflowClient
from typer.testing import CliRunner

import cli
from bitmoji_ml.commands import views
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.selection.seeds import SeedsResult, parse_seeds

SEEDS = (0, 1)
FOLDS = 2
RECIPE = ["--model", "compact", "--epochs", "3", "--image-size", "32", "--batch-size", "8", "--threads", "1"]
EXPERIMENT = "cv-seeds-test"


@dataclasses.dataclass
class SeedsRun:
    uri: str
    lists: Path
    output: str
    result: SeedsResult  # what the job returned to the view


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory: pytest.TempPathFactory, mlflow_store_template: Path) -> SeedsRun:
    folder = tmp_path_factory.mktemp("cv-seeds")
    uri = copy_store(mlflow_store_template, folder)
    runner, lists = CliRunner(), folder / "lists"
    dataset = make_dataset(folder / "bitmoji")
    prepared = runner.invoke(cli.app, ["prepare", "--data-dir", str(dataset), "--lists", str(lists)])
    assert prepared.exit_code == 0, prepared.output
    shown: list[SeedsResult] = []
    real_view = views.show_cv_seeds
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setattr(views, "show_cv_seeds", lambda result: shown.append(result) or real_view(result))
        seeds = ",".join(str(seed) for seed in SEEDS)
        arguments = ["cv", "--seeds", seeds, "--folds", str(FOLDS), "--lists", str(lists)]
        result = runner.invoke(cli.app, [*arguments, "--experiment", EXPERIMENT, *RECIPE])
    assert result.exit_code == 0, result.output
    assert len(shown) == 1
    return SeedsRun(uri, lists, result.output, shown[0])


def cv_parents(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    parents = client.search_runs([experiment.experiment_id], "tags.run_kind = 'cv'")
    return sorted(parents, key=lambda run: int(run.data.params["seed"]))


def test_each_seed_is_a_finished_cv_run_with_its_folds(seeds_run: SeedsRun):
    client = MlflowClient(seeds_run.uri)
    parents = cv_parents(client)
    assert [int(run.data.params["seed"]) for run in parents] == list(SEEDS)
    assert [run.info.run_id for run in parents] == [run.run_id for run in seeds_run.result.runs]
    for seed, parent in zip(SEEDS, parents, strict=True):
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["mlflow.runName"].endswith(f"-seed{seed}")
        assert parent.data.tags["cv_seeds"] == "0,1"
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
        assert sorted(child.data.params["cv_fold"] for child in children) == ["1", "2"]
        assert {child.data.params["seed"] for child in children} == {str(seed)}


def test_the_seeds_split_the_folds_differently(seeds_run: SeedsRun):
    first, second = (run.oof for run in seeds_run.result.runs)
    assert first.images == second.images
    assert not np.array_equal(first.folds, second.folds)


def test_the_summary_is_the_mean_and_std_of_each_seeds_logged_metrics(seeds_run: SeedsRun):
    parents = cv_parents(MlflowClient(seeds_run.uri))
    summary = seeds_run.result.summary
    for key in ("oof_errors", "oof_acc", "cv_loss"):
        logged = [run.data.metrics[key] for run in parents]
        assert summary[key].mean == pytest.approx(np.mean(logged)), key
        assert summary[key].std == pytest.approx(np.std(logged, ddof=1)), key
    printed = re.search(r"OOF errors ([\d.]+) ± ([\d.]+)", seeds_run.output)
    assert printed is not None, seeds_run.output
    assert float(printed.group(1)) == pytest.approx(summary["oof_errors"].mean, abs=0.05)
    assert f"cv loss {summary['cv_loss'].mean:.4f} ± {summary['cv_loss'].std:.4f}" in seeds_run.output
    assert "over 2 seeds (mean ± std)" in seeds_run.output


def test_seeds_refuses_a_seed_flag_as_well(mlflow_store: str, tiny_lists: Path):
    result = CliRunner().invoke(cli.app, ["cv", "--seeds", "0,1", "--lists", str(tiny_lists), "--seed", "3"])
    assert result.exit_code == 1
    assert "give --seed or --seeds, not both" in result.output


def test_seeds_replace_the_seed_of_a_config_file(mlflow_store: str, tiny_lists: Path):
    """A tuned best_config.toml (or a run's recipe.toml) always holds a seed: judging that recipe
    over seeds must not need the file edited. Flags beat the file, --seeds too."""
    config = tiny_lists.parent / "tuned.toml"
    config.write_text('seed = 3\nepochs = 1\nmodel = "compact"\nimage_size = 32\nbatch_size = 8\n')
    arguments = ["cv", "--seeds", "0,1", "--folds", "2", "--lists", str(tiny_lists), "--config", str(config)]
    arguments += ["--experiment", EXPERIMENT]
    result = CliRunner().invoke(cli.app, arguments)
    assert result.exit_code == 0, result.output
    parents = cv_parents(MlflowClient(mlflow_store))
    assert sorted(run.data.params["seed"] for run in parents) == ["0", "1"]
    assert {run.data.params["epochs"] for run in parents} == {"1"}  # the file's other settings hold


@pytest.mark.parametrize(
    ("text", "message"), [("0,x", "comma-separated integers"), (",", "at least one"), ("1,1", "repeats")]
)
def test_parse_seeds_refuses_what_is_not_a_list_of_distinct_integers(text: str, message: str):
    assert parse_seeds(" 0, 2,5 ") == [0, 2, 5]
    with pytest.raises(BitmojiError, match=message):
        parse_seeds(text)
