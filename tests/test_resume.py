"""`--resume`: the policy (what may change, what must match), the re-planned learning-rate
schedule, and how a resumed run records what changed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from bitmoji_ml.checkpoints import read_checkpoint, save_checkpoint
from bitmoji_ml.data.dataset import load_dataset
from bitmoji_ml.data.lists import write_lists
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import DEFAULT_MODEL, create_model, model_spec
from bitmoji_ml.recipe import Recipe, resolve_recipe
from bitmoji_ml.training import TrainJobResult, train_job
from bitmoji_ml.training.resume import RESUME_POLICY, Rule, resume_config
from bitmoji_ml.training.schedule import Schedule
from bitmoji_ml.training.settings import resolve_config

STEPS_PER_EPOCH = 38  # the real data: 2400 training images at batch 64


def train(lists: Path, **overrides) -> TrainJobResult:
    settings = {"batch_size": 16, "threads": 1, **overrides}
    return train_job(lists_dir=lists, experiment="test-exp", recipe=resolve_recipe(overrides=settings))


def resume(lists: Path, run_id: str, **overrides) -> TrainJobResult:
    overrides = {"threads": 1, **overrides}
    return train_job(
        lists_dir=lists,
        experiment="test-exp",
        recipe=resolve_recipe(overrides=overrides),
        resume_run_id=run_id,
    )


def lr_history(run_id: str) -> list[float]:
    return [metric.value for metric in MlflowClient().get_metric_history(run_id, "lr")]


# --------------------------------------------------------------------------------------------
# The policy table


def test_every_config_field_has_a_resume_rule() -> None:
    assert set(RESUME_POLICY) == set(Recipe.model_fields)


def test_recipe_fields_must_match_and_machine_fields_do_not() -> None:
    must_match = {field for field, rule in RESUME_POLICY.items() if rule is Rule.MATCH}
    assert {"model", "image_size", "batch_size", "optimizer", "lr", "schedule", "seed"} <= must_match
    assert not {"epochs", "patience", "device", "threads", "disk_cache"} & must_match


def saved_config(**changes) -> Recipe:
    return resolve_config(Recipe(threads=1)).replace(**changes)


def test_a_changed_recipe_setting_is_refused_naming_it_with_both_values() -> None:
    with pytest.raises(BitmojiError) as caught:
        resume_config(saved_config(), {"lr": 0.01, "batch_size": 8, "epochs": 30})
    message = str(caught.value)
    assert "lr (checkpoint 0.002, requested 0.01)" in message
    assert "batch_size (checkpoint 64, requested 8)" in message
    assert "epochs" not in message


def test_the_same_value_given_again_is_accepted() -> None:
    saved = saved_config()
    # image_size 0 means the model's size, which is what the checkpoint records.
    resumed = resume_config(saved, {"lr": 0.002, "image_size": 0, "model": saved.model})
    assert resumed.config == saved.replace(threads=resumed.config.threads)


def test_epochs_and_patience_continue_from_the_checkpoint_unless_given() -> None:
    saved = saved_config(epochs=20, patience=3)
    assert resume_config(saved, {}).config.epochs == 20
    resumed = resume_config(saved, {"epochs": 30})
    assert (resumed.config.epochs, resumed.config.patience) == (30, 3)
    assert resumed.changed["epochs"] == "30"


def test_device_and_threads_come_from_this_machine_not_the_checkpoint() -> None:
    trained_on_gpu = saved_config(device="cuda", threads=64)
    resumed = resume_config(trained_on_gpu, {})  # no --device: auto, resolved here
    here = resolve_config(Recipe())
    assert (resumed.config.device, resumed.config.threads) == (here.device, here.threads)
    if here.device != "cuda":
        assert resumed.changed["device"] == here.device
    assert resume_config(trained_on_gpu, {"device": "cpu", "threads": 2}).config.device == "cpu"


def test_unknown_requested_keys_are_refused() -> None:
    with pytest.raises(BitmojiError, match="learning_rate"):
        resume_config(saved_config(), {"learning_rate": 0.1})


# --------------------------------------------------------------------------------------------
# The re-planned schedule, on the real default (one-cycle) and the real data's step counts


def lr_jump(schedule: Schedule, done: int) -> float:
    """LR multiplier of the first step after resuming at `done` over that of the last step before."""
    return schedule.factor(done) / schedule.factor(done - 1)


def test_extending_a_finished_onecycle_run_does_not_make_the_lr_jump() -> None:
    planned = Schedule.planned("onecycle", 20 * STEPS_PER_EPOCH)
    done, end = 20 * STEPS_PER_EPOCH, 30 * STEPS_PER_EPOCH
    extended = planned.replanned(end_step=end, at_step=done)
    assert 0.5 <= lr_jump(extended, done) <= 1.0
    assert extended.factor(end - 1) < 1e-3 * extended.factor(done)
    assert extended.factor(end) == 0.0
    # The defect: reading the 30-epoch plan at step 760 restarts at ~0.37x the peak.
    naive = Schedule.planned("onecycle", end)
    assert naive.factor(done) > 0.3


def test_extending_an_interrupted_run_continues_from_its_lr_down_to_zero() -> None:
    planned = Schedule.planned("onecycle", 20 * STEPS_PER_EPOCH)
    done, end = 8 * STEPS_PER_EPOCH, 30 * STEPS_PER_EPOCH
    extended = planned.replanned(end_step=end, at_step=done)
    assert extended.factor(done - 1) == planned.factor(done - 1)  # the past is unchanged
    assert 0.99 <= lr_jump(extended, done) <= 1.0
    values = [extended.factor(step) for step in range(done, end + 1)]
    assert all(later <= earlier for earlier, later in zip(values, values[1:], strict=False))
    assert values[-1] == 0.0 and values[-2] < 1e-4
    # The longer plan decays more slowly than the original would have.
    assert extended.factor(19 * STEPS_PER_EPOCH) > 10 * planned.factor(19 * STEPS_PER_EPOCH)


def test_a_run_interrupted_during_warm_up_still_reaches_the_peak() -> None:
    planned = Schedule.planned("onecycle", 20 * STEPS_PER_EPOCH)
    extended = planned.replanned(end_step=30 * STEPS_PER_EPOCH, at_step=STEPS_PER_EPOCH)
    peak = max(extended.factor(step) for step in range(30 * STEPS_PER_EPOCH))
    assert peak == pytest.approx(1.0, abs=0.01)


def test_extending_twice_and_round_tripping_the_state() -> None:
    planned = Schedule.planned("onecycle", 10 * STEPS_PER_EPOCH)
    once = planned.replanned(end_step=15 * STEPS_PER_EPOCH, at_step=5 * STEPS_PER_EPOCH)
    twice = once.replanned(end_step=25 * STEPS_PER_EPOCH, at_step=12 * STEPS_PER_EPOCH)
    assert 0.99 <= lr_jump(twice, 12 * STEPS_PER_EPOCH) <= 1.0
    assert twice.factor(7 * STEPS_PER_EPOCH) == once.factor(7 * STEPS_PER_EPOCH)
    assert twice.factor(25 * STEPS_PER_EPOCH) == 0.0
    assert Schedule.from_state_dict(twice.state_dict()) == twice


def test_a_constant_schedule_stays_constant_and_an_unchanged_length_changes_nothing() -> None:
    constant = Schedule.planned("constant", 100)
    assert constant.replanned(end_step=200, at_step=100).factor(150) == 1.0
    onecycle = Schedule.planned("onecycle", 100)
    assert onecycle.replanned(end_step=100, at_step=40) == onecycle


def test_planned_onecycle_warms_up_then_decays_to_zero() -> None:
    schedule = Schedule.planned("onecycle", 100)
    assert schedule.factor(0) == pytest.approx(0.04)
    assert schedule.factor(20) == 1.0
    assert schedule.factor(60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule.factor(100) == 0.0
    assert Schedule.planned("cosine", 100).factor(0) == 1.0


# --------------------------------------------------------------------------------------------
# Resuming runs end to end


def test_resume_with_more_epochs_records_the_change(tiny_lists: Path, mlflow_store: str):
    first = train(tiny_lists, epochs=2)
    resumed = resume(tiny_lists, first.run_id, epochs=4)
    run = MlflowClient().get_run(first.run_id)
    assert run.data.params["epochs"] == "2"  # params are immutable ...
    assert run.data.tags["resumed.epochs"] == "4"  # ... the tag says what changed
    assert (
        run.info.run_name
        == f"{DEFAULT_MODEL}-{model_spec(DEFAULT_MODEL).preprocess.size}px-e4-bs16-adamw-lr0.002"
    )
    assert resumed.config.epochs == 4
    lrs = lr_history(first.run_id)
    assert len(lrs) == 4
    assert lrs[2] <= lrs[1] and lrs[3] < lrs[2]  # no jump back up; decays towards zero


def test_a_custom_run_name_is_kept_on_resume(tiny_lists: Path, mlflow_store: str):
    first = train_job(
        lists_dir=tiny_lists,
        experiment="test-exp",
        recipe=resolve_recipe(overrides={"epochs": 1, "batch_size": 16, "threads": 1}),
        run_name="my-run",
    )
    resume(tiny_lists, first.run_id, epochs=2)
    assert MlflowClient().get_run(first.run_id).info.run_name == "my-run"


def test_resume_refuses_a_changed_recipe_before_touching_the_run(tiny_lists: Path, mlflow_store: str):
    first = train(tiny_lists, epochs=1)
    with pytest.raises(BitmojiError, match=r"lr \(checkpoint 0.002, requested 0.01\)"):
        resume(tiny_lists, first.run_id, epochs=2, lr=0.01)
    run = MlflowClient().get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert len(lr_history(first.run_id)) == 1


def test_resume_refuses_other_lists(tiny_lists: Path, tiny_dataset: Path, tmp_path: Path, mlflow_store: str):
    first = train(tiny_lists, epochs=1)
    other = tmp_path / "other-lists"
    write_lists(load_dataset(tiny_dataset), other, val_fraction=0.25, seed=1)  # another split
    with pytest.raises(BitmojiError, match="not the ones run") as caught:
        resume(other, first.run_id, epochs=2)
    assert str(other) in str(caught.value)
    assert len(lr_history(first.run_id)) == 1


def test_resume_of_a_finished_run_needs_more_epochs(tiny_lists: Path, mlflow_store: str):
    first = train(tiny_lists, epochs=1)
    with pytest.raises(BitmojiError, match="--epochs N with N > 1"):
        resume(tiny_lists, first.run_id)


def rewrite_last_checkpoint(run_id: str, folder: Path, **config_changes) -> None:
    """Replace the run's last.pt by one whose config differs (as if trained elsewhere)."""
    client = MlflowClient()
    payload = read_checkpoint(client.download_artifacts(run_id, "checkpoints/last.pt", str(folder)))
    payload["config"].update(config_changes)
    network = create_model(payload["model"])
    network.load_state_dict(payload.pop("state_dict"))
    path = folder / "upload" / "last.pt"
    save_checkpoint(path, network, **{key: value for key, value in payload.items() if key != "format"})
    client.log_artifact(run_id, str(path), "checkpoints")


def test_a_run_trained_on_cuda_resumes_on_this_machine(tiny_lists: Path, mlflow_store: str, tmp_path: Path):
    first = train(tiny_lists, epochs=1)
    rewrite_last_checkpoint(first.run_id, tmp_path, device="cuda", threads=64)
    resumed = resume(tiny_lists, first.run_id, epochs=2)  # no --device: resolved here
    here = resolve_config(Recipe())
    assert resumed.config.device == here.device
    run = MlflowClient().get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert len(lr_history(first.run_id)) == 2
    if here.device != "cuda":
        assert run.data.tags["resumed.device"] == here.device


def test_a_format_1_checkpoint_cannot_be_resumed(tiny_lists: Path, mlflow_store: str, tmp_path: Path):
    first = train(tiny_lists, epochs=1)
    path = tmp_path / "last.pt"
    save_checkpoint(path, create_model("compact"), model="compact", preprocess={}, config={})
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format": 1}, path)
    MlflowClient().log_artifact(first.run_id, str(path), "checkpoints")
    with pytest.raises(BitmojiError, match="format 1; resuming needs format 2"):
        resume(tiny_lists, first.run_id, epochs=2)
