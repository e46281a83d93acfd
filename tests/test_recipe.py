"""The recipe declared once (recipe.py): the flags of train, cv and tune come from it, each run
logs it as recipe.toml and `--config` reads that back, torchrun workers get it as a file, and
train, cv folds and tune trials build the same training state from it."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import numpy as np
import pytest
import typer.main
from mlflow import MlflowClient
from pydantic import ValidationError

import cli
from bitmoji_ml.commands import options
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.recipe import FIELDS, RECIPE_FILE, RESUME_POLICY, SEARCH_SPACE, Recipe, facts, resolve_recipe
from bitmoji_ml.training import distributed, launch, sharding
from bitmoji_ml.training.data import TrainData
from bitmoji_ml.training.nested import train_on_data
from bitmoji_ml.training.settings import resolve_config


def command_options(name: str) -> set[str]:
    command = typer.main.get_command(cli.app).commands[name]
    return {opt for param in command.params for opt in param.opts + param.secondary_opts}


@pytest.mark.parametrize("command", ["train", "cv", "tune"])
def test_each_setting_is_a_flag_of_exactly_the_commands_its_declaration_names(command: str):
    flags = command_options(command)
    for name in FIELDS:
        flag = f"--{name.replace('_', '-')}"
        assert (flag in flags) == (command in facts(name)["commands"]), (command, name)
    assert {"--preset", "--config"} <= flags


def test_the_declaration_is_the_one_source_of_resume_rules_search_space_and_help():
    assert set(RESUME_POLICY) == set(FIELDS)
    assert set(SEARCH_SPACE) <= set(FIELDS)
    for name in FIELDS:
        assert Recipe.model_fields[name].description, name
    command = typer.main.get_command(cli.app).commands["train"]
    epochs = next(param for param in command.params if param.name == "epochs")
    assert epochs.help.startswith(Recipe.model_fields["epochs"].description)


def test_no_command_collects_its_flags_with_locals():
    for module in ("train", "select"):
        source = inspect.getsource(__import__(f"bitmoji_ml.commands.{module}", fromlist=["_"]))
        assert "locals()" not in source


def test_flags_beat_the_file_which_beats_the_preset(tmp_path: Path):
    path = tmp_path / "mine.toml"
    path.write_text("epochs = 7\nlr = 0.01\n")
    resolved = resolve_recipe("seed-cnn", path, {"lr": 0.02, "epochs": None})
    assert (resolved.recipe.model, resolved.recipe.epochs, resolved.recipe.lr) == ("seed-cnn", 7, 0.02)
    assert resolved.given >= {"model", "epochs", "lr"} and "threads" not in resolved.given
    with pytest.raises(ValidationError, match="frozen"):  # no job can change what it was given
        resolved.recipe.epochs = 3  # type: ignore[misc]


def test_bad_values_name_the_setting_and_what_is_allowed():
    with pytest.raises(BitmojiError, match=r"epochs=True: true/false where a number \(int\)"):
        resolve_recipe(overrides={"epochs": True})
    with pytest.raises(BitmojiError, match="lr=nan"):
        resolve_recipe(overrides={"lr": float("nan")})
    with pytest.raises(BitmojiError, match=r"shift=0\.5: .*less than 0\.5"):
        resolve_recipe(overrides={"shift": 0.5})


def test_a_run_logs_its_recipe_toml_and_config_reads_it_back(tiny_lists: Path, mlflow_store: str, tmp_path):
    from bitmoji_ml.training import train_job

    asked = {"epochs": 1, "batch_size": 16, "threads": 1, "lr": 0.005, "jitter": 0.1, "flip": False}
    result = train_job(lists_dir=tiny_lists, experiment="e", recipe=resolve_recipe(overrides=asked))
    path = MlflowClient().download_artifacts(result.run_id, RECIPE_FILE, str(tmp_path))
    written = tomllib.loads(Path(path).read_text())
    assert "device" not in written and "threads" not in written  # the machine's, not the recipe's
    again = resolve_recipe(config_file=Path(path)).recipe
    assert resolve_config(again).recipe_values() == result.config.recipe_values()
    assert (again.lr, again.jitter, again.flip) == (0.005, 0.1, False)


def test_torchrun_workers_read_the_resolved_recipe_not_rebuilt_flags(tmp_path: Path):
    resolved = resolve_recipe("seed-cnn", overrides={"epochs": 3, "lr": 0.01})
    path = tmp_path / "recipe.toml"
    path.write_text(launch.workers_recipe(resolved, resume=False))
    assert resolve_recipe(config_file=path).recipe == resolved.recipe
    arguments = launch.worker_arguments(
        recipe_file=path, lists_dir=Path("l"), experiment="x", run_name=None, resume_run_id="abc"
    )
    assert arguments == [
        "--config",
        str(path),
        "--lists",
        "l",
        "--experiment",
        "x",
        "--resume",
        "--run-id",
        "abc",
    ]
    # On --resume the checkpoint decides what was not asked for: only the asked settings travel.
    path.write_text(launch.workers_recipe(resolved, resume=True))
    assert set(tomllib.loads(path.read_text())) == set(resolved.given)


def test_resume_and_run_id_go_together(tiny_lists: Path):
    from typer.testing import CliRunner

    runner = CliRunner()
    alone = runner.invoke(cli.app, ["train", "--resume", "--lists", str(tiny_lists)])
    assert alone.exit_code == 1 and "--run-id" in alone.output
    unasked = runner.invoke(cli.app, ["train", "--run-id", "abc", "--lists", str(tiny_lists)])
    assert unasked.exit_code == 1 and "add --resume" in unasked.output


def test_nested_training_plans_the_lr_on_the_steps_the_loop_takes(single_torch_thread):
    """Defect a: cv folds and tune trials planned ceil(n / batch) steps per epoch while the loop
    leaves out a lone last image, so with n % batch == 1 the LR never reached its end."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(17, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0, 1] * 8 + [0])
    data = TrainData(images, labels, images[:4], labels[:4], {"digest": "d"})
    config = resolve_config(Recipe(model="compact", epochs=2, batch_size=16, image_size=32, threads=1))
    trained = train_on_data(run=distributed.NullRun(), config=config, data=data, datasets=None)
    steps = sharding.steps_per_epoch(17, batch_size=16, world_size=1)
    assert steps == 1
    assert trained.state.step == 2 * steps == trained.state.schedule.end_step
    assert trained.state.schedule.factor(trained.state.step) == pytest.approx(0.0, abs=1e-6)


def test_options_module_declares_no_recipe_setting_of_its_own():
    source = inspect.getsource(options)
    for name in FIELDS:
        assert f'"--{name.replace("_", "-")}"' not in source, name


def test_an_interrupted_fold_or_trial_says_to_rerun_not_to_resume(single_torch_thread, monkeypatch, caplog):
    """A cv fold's run cannot be continued with `train --resume` (its images are not the lists'):
    the message on Ctrl-C or SIGTERM says what works instead."""
    from bitmoji_ml.training import job

    def interrupted(**_):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "fit", interrupted)
    caplog.set_level("INFO", logger="bitmoji_ml")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    data = TrainData(images, np.array([0, 1] * 4), images[:2], np.array([0, 1]), {"digest": "d"})
    config = resolve_config(Recipe(model="compact", epochs=1, batch_size=4, image_size=32, threads=1))
    with pytest.raises(KeyboardInterrupt):
        train_on_data(run=distributed.NullRun(), config=config, data=data, datasets=None)
    assert "run `bitmoji cv` again" in caplog.text and "--resume" not in caplog.text
