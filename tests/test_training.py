"""Training end to end on tiny generated data, asserted through MLflow's client."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from typer.testing import CliRunner

import cli
from bitmoji_ml.checkpoints import read_checkpoint
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import DEFAULT_MODEL, model_spec
from bitmoji_ml.recipe import resolve_recipe
from bitmoji_ml.training import TrainJobResult, job, loop, train_job

EPOCH_METRICS = {
    "train_loss",
    "train_objective",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "epoch_seconds",
    "images_per_second",
}


def run_training(lists: Path, epochs: int = 2, **overrides) -> TrainJobResult:
    overrides = {"epochs": epochs, "batch_size": 16, "threads": 1, **overrides}
    return train_job(lists_dir=lists, experiment="test-exp", recipe=resolve_recipe(overrides=overrides))


def resume_training(lists: Path, run_id: str, **overrides) -> TrainJobResult:
    # Threads are this machine's choice, not the run's: same count, same float sums.
    overrides = {"threads": 1, **overrides}
    return train_job(
        lists_dir=lists,
        experiment="test-exp",
        recipe=resolve_recipe(overrides=overrides),
        resume_run_id=run_id,
    )


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_run_logs_params_metrics_checkpoints_and_logged_model(tiny_lists: Path, mlflow_store: str):
    result = run_training(tiny_lists, epochs=2)
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == DEFAULT_MODEL
    assert run.data.params["epochs"] == "2"
    assert run.data.params["batch_size"] == "16"
    assert {"model", "torch_version", "cpu_count", "device", "data_digest"} <= set(run.data.tags)
    assert run.data.tags["torch_version"] == torch.__version__
    for key in EPOCH_METRICS:
        assert [step for step, _ in history(client, run.info.run_id, key)] == [1, 2], key
    assert run.data.metrics["best_val_acc"] == pytest.approx(result.best_val_acc)
    assert run.data.metrics["train_seconds"] > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert artifacts == {"checkpoints/best.pt", "checkpoints/last.pt"}
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/learning_curves.png", "plots/confusion_matrix.png"}
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert inputs == {"bitmoji-train", "bitmoji-val"}

    models = client.search_logged_models(
        [run.info.experiment_id], order_by=[{"field_name": "metrics.val_acc", "ascending": False}]
    )
    assert len(models) == 1, "the run's best checkpoint is one logged model, updated at each new best"
    top = models[0]
    assert top.source_run_id == run.info.run_id
    assert top.status == LoggedModelStatus.READY
    assert top.tags["step"] == str(result.best_epoch)
    val_acc = sorted((m for m in top.metrics if m.key == "val_acc"), key=lambda m: m.step)
    assert val_acc and val_acc[-1].value == pytest.approx(result.best_val_acc)  # its latest: best.pt's
    assert val_acc[-1].step == result.best_epoch
    # The best checkpoint printed for the user is a real file holding that epoch.
    payload = read_checkpoint(result.best_checkpoint)
    assert payload["epoch"] == result.best_epoch
    assert payload["preprocess"]["size"] == model_spec(DEFAULT_MODEL).preprocess.size
    assert set(payload["config"]) >= {"model", "lr", "epochs"}


def test_params_are_logged_resolved(tiny_lists: Path, mlflow_store: str):
    # Requested: the model's input size (0), the best device (auto), all cores (0).
    result = train_job(
        lists_dir=tiny_lists,
        experiment="test-exp",
        recipe=resolve_recipe(overrides={"epochs": 1, "batch_size": 16}),
    )
    run = MlflowClient().get_run(result.run_id)
    size = model_spec(DEFAULT_MODEL).preprocess.size
    device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    expected = {"image_size": str(size), "device": device, "threads": str(os.cpu_count())}
    assert {key: run.data.params[key] for key in expected} == expected
    assert run.info.run_name == f"{DEFAULT_MODEL}-{size}px-e1-bs16-adamw-lr0.002"
    assert run.data.tags["device"] == device
    assert int(run.data.tags["parameters"]) > 1000
    assert result.config.image_size == size and result.config.device == device
    last = read_checkpoint(MlflowClient().download_artifacts(result.run_id, "checkpoints/last.pt"))
    assert last["config"]["image_size"] == size and last["config"]["threads"] == os.cpu_count()


def test_same_seed_same_metrics(tiny_lists: Path, mlflow_store: str):
    first = run_training(tiny_lists, epochs=2, seed=3)
    second = run_training(tiny_lists, epochs=2, seed=3)
    other = run_training(tiny_lists, epochs=2, seed=4)
    client = MlflowClient()
    for key in ("train_loss", "val_loss", "val_acc"):
        assert history(client, first.run_id, key) == history(client, second.run_id, key)
    assert history(client, first.run_id, "train_loss") != history(client, other.run_id, "train_loss")


def test_resume_continues_the_same_run_and_its_steps(tiny_lists: Path, mlflow_store: str):
    first = run_training(tiny_lists, epochs=1)
    resumed = resume_training(tiny_lists, first.run_id, epochs=3)
    assert resumed.run_id == first.run_id
    client = MlflowClient()
    assert [step for step, _ in history(client, first.run_id, "val_acc")] == [1, 2, 3]
    last = read_checkpoint(client.download_artifacts(first.run_id, "checkpoints/last.pt"))
    assert last["epoch"] == 3
    assert [row["epoch"] for row in last["train_state"]["history"]] == [1, 2, 3]


def test_resume_matches_an_uninterrupted_run(tiny_lists: Path, mlflow_store: str):
    straight = run_training(tiny_lists, epochs=3, seed=5, schedule="constant")
    part = run_training(tiny_lists, epochs=1, seed=5, schedule="constant")
    resume_training(tiny_lists, part.run_id, epochs=3)
    client = MlflowClient()
    assert history(client, straight.run_id, "train_loss") == history(client, part.run_id, "train_loss")


def test_resume_after_ctrl_c_matches_an_uninterrupted_default_run(
    tiny_lists: Path, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
):
    straight = run_training(tiny_lists, epochs=3)  # the default one-cycle schedule
    real_evaluate, calls = loop.evaluate, {"n": 0}

    def interrupt_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "evaluate", interrupt_in_epoch_two)
        with pytest.raises(KeyboardInterrupt):
            run_training(tiny_lists, epochs=3)
    client = MlflowClient()
    killed = next(
        run
        for run in client.search_runs([client.get_experiment_by_name("test-exp").experiment_id])
        if run.info.status == "KILLED"
    )
    resume_training(tiny_lists, killed.info.run_id)  # no flags: the same 3 epochs
    for key in ("train_loss", "val_loss", "lr"):
        assert history(client, straight.run_id, key) == history(client, killed.info.run_id, key), key


def test_ctrl_c_marks_run_killed_and_keeps_last_checkpoint(
    tiny_lists: Path, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
):
    real_augment = loop.augment_batch
    calls = {"n": 0}
    batches_per_epoch = 2  # 24 train images at batch 16

    def interrupt_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > batches_per_epoch:
            raise KeyboardInterrupt
        return real_augment(*args, **kwargs)

    monkeypatch.setattr(loop, "augment_batch", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_lists, epochs=3)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("test-exp").experiment_id])
    assert run.info.status == "KILLED"
    last = read_checkpoint(client.download_artifacts(run.info.run_id, "checkpoints/last.pt"))
    assert last["epoch"] == 1


def test_unusable_tracking_uri_fails_before_training(tiny_lists: Path, tmp_path: Path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/a-file/mlflow.db")
    decoded = []
    monkeypatch.setattr(job, "load_data", lambda *a, **k: decoded.append(1))
    with pytest.raises(BitmojiError, match="MLFLOW_TRACKING_URI"):
        run_training(tiny_lists)
    assert not decoded


@pytest.mark.parametrize("uri", ["bogus-scheme://somewhere", "http://127.0.0.1:9"])
def test_unreachable_or_invalid_uri_fails_fast(uri: str, tiny_lists: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # port 9 (discard): nothing listens
    result = CliRunner().invoke(cli.app, ["train", "--lists", str(tiny_lists), "--epochs", "1"])
    assert result.exit_code == 1
    assert "cannot use the MLflow tracking store" in result.output


def test_unknown_resume_run_is_a_clear_error(tiny_lists: Path, mlflow_store: str):
    with pytest.raises(BitmojiError, match="unknown run id"):
        resume_training(tiny_lists, "0" * 32)


def test_train_cli_prints_run_and_best_checkpoint(tiny_lists: Path, mlflow_store: str):
    result = CliRunner().invoke(
        cli.app,
        [
            "train",
            "--lists",
            str(tiny_lists),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--run-name",
            "cli-run",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best val acc" in result.output
    path = result.output.split("best checkpoint:")[1].strip()
    assert Path(path).is_file()
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("bitmoji-gender").experiment_id])
    assert run.info.run_name == "cli-run"


def test_missing_lists_is_a_clear_error(tmp_path: Path, mlflow_store: str):
    result = CliRunner().invoke(cli.app, ["train", "--lists", str(tmp_path / "nothing"), "--epochs", "1"])
    assert result.exit_code == 1
    assert "bitmoji prepare" in result.output


def test_config_file_and_flags(tiny_lists: Path, mlflow_store: str, tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text('optimizer = "sgd"\nlr = 0.01\nepochs = 5\n')
    result = CliRunner().invoke(
        cli.app,
        [
            "train",
            "--lists",
            str(tiny_lists),
            "--config",
            str(toml),
            "--epochs",
            "1",
            "--batch-size",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("bitmoji-gender").experiment_id])
    assert run.data.params["optimizer"] == "sgd"
    assert run.data.params["lr"] == "0.01"
    assert run.data.params["epochs"] == "1"
