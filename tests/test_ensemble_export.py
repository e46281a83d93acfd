"""`bitmoji export-onnx --cv-run`: the fold models of a tiny cv run as one ONNX model, checked
against the mean of the PyTorch members, run by `predict` and the registered image model, and
registered without moving @champion unless --promote. One cv run and one export per module."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import copy_store, make_dataset
from mlflow import MlflowClient
from typer.testing import CliRunner

import cli
from bitmoji_ml.checkpoints import model_from_checkpoint, read_checkpoint
from bitmoji_ml.data.cache import load_list
from bitmoji_ml.export.ensemble import EnsembleExportResult, export_ensemble_job
from bitmoji_ml.serving.onnx_model import INPUT_NAME, LOGITS_OUTPUT, PROB_OUTPUT, OnnxModel
from bitmoji_ml.tracking.store import Store
from bitmoji_ml.training.evaluate import predict_probabilities

FOLDS = 3
EPOCHS = 3
RECIPE = ["--model", "compact", "--epochs", str(EPOCHS), "--image-size", "32", "--batch-size", "8"]
EXPERIMENT = "ensemble-test"
TOLERANCE = 1e-5


@dataclasses.dataclass
class Exported:
    uri: str
    lists: Path
    cv_run_id: str
    fold_runs: list[str]  # in fold order
    result: EnsembleExportResult
    folder: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, mlflow_store_template: Path) -> Exported:
    folder = tmp_path_factory.mktemp("ensemble")
    uri = copy_store(mlflow_store_template, folder)
    runner, lists = CliRunner(), folder / "lists"
    dataset = make_dataset(folder / "bitmoji")
    prepared = runner.invoke(cli.app, ["prepare", "--data-dir", str(dataset), "--lists", str(lists)])
    assert prepared.exit_code == 0, prepared.output
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        arguments = ["cv", "--folds", str(FOLDS), "--lists", str(lists), "--experiment", EXPERIMENT]
        result = runner.invoke(cli.app, [*arguments, *RECIPE, "--threads", "1"])
        assert result.exit_code == 0, result.output
        client = MlflowClient(uri)
        experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
        (parent,) = client.search_runs([experiment_id], "tags.run_kind = 'cv'")
        children = client.search_runs([experiment_id], "tags.run_kind = 'cv_fold'")
        fold_runs = [
            run.info.run_id for run in sorted(children, key=lambda run: int(run.data.params["cv_fold"]))
        ]
        exported = export_ensemble_job(
            cv_run_id=parent.info.run_id,
            output=folder / "ensemble.onnx",
            store=Store.open(uri),
            lists_dir=lists,
        )
    return Exported(uri, lists, parent.info.run_id, fold_runs, exported, folder)


def member_probabilities(exported: Exported, images: np.ndarray, folder: Path) -> np.ndarray:
    """P(male) of each fold's last.pt, rebuilt in PyTorch independently of the export code."""
    client, probabilities = MlflowClient(exported.uri), []
    for run_id in exported.fold_runs:
        path = client.download_artifacts(run_id, "checkpoints/last.pt", str(folder / run_id))
        model, _ = model_from_checkpoint(read_checkpoint(path))
        probabilities.append(predict_probabilities(model, images, torch.device("cpu")))
    return np.stack(probabilities)


def test_the_onnx_output_is_the_mean_of_the_members_pytorch_probabilities(exported: Exported, tmp_path: Path):
    model = OnnxModel.load(exported.result.export.output)
    val_images, _, _ = load_list(exported.lists / "val.txt", model.preprocess)
    random = np.random.default_rng(1).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    images = np.concatenate([val_images, random])
    members = member_probabilities(exported, images, tmp_path)
    assert np.abs(members - members.mean(axis=0)).max() > 1e-3  # the members differ: a mean to check
    onnx_prob = model.predict_batched(images)
    assert np.abs(onnx_prob - members.mean(axis=0)).max() <= TOLERANCE
    (logits,) = model.session.run([LOGITS_OUTPUT], {model.input_name: images[:4]})
    assert np.allclose(torch.softmax(torch.from_numpy(logits), dim=1).numpy(), onnx_prob[:4], atol=TOLERANCE)
    report = exported.result.export.report
    assert report.passed and report.tolerance == TOLERANCE
    assert report.cases[0].case == "validation images" and report.cases[0].images == len(val_images)
    written = json.loads(exported.result.export.output.with_suffix(".parity.json").read_text())
    assert written["passed"] is True


def test_one_input_and_the_single_model_outputs_and_metadata(exported: Exported):
    model = OnnxModel.load(exported.result.export.output)
    inputs = model.session.get_inputs()
    assert [(i.name, i.type) for i in inputs] == [(INPUT_NAME, "tensor(uint8)")]
    assert [o.name for o in model.session.get_outputs()] == [PROB_OUTPUT, LOGITS_OUTPUT]
    metadata = model.metadata
    assert json.loads(metadata["ensemble_members"]) == exported.fold_runs
    assert metadata["mlflow_run_id"] == exported.cv_run_id
    recipe = json.loads(metadata["recipe"])
    assert recipe["model"] == "compact" and recipe["epochs"] == EPOCHS and recipe["image_size"] == 32
    assert metadata["model_name"] == f"ensemble of {FOLDS} compact"
    assert metadata["val_acc"] == "nan"  # no held-out images: the members saw every labelled one
    assert exported.result.members == exported.fold_runs


def test_predict_runs_the_ensemble_file(exported: Exported, tmp_path: Path):
    output = tmp_path / "predictions.csv"
    folder = exported.folder / "bitmoji" / "testimages"
    arguments = [
        "predict",
        str(folder),
        "--model",
        str(exported.result.export.output),
        "--output",
        str(output),
    ]
    result = CliRunner().invoke(cli.app, arguments)
    assert result.exit_code == 0, result.output
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(list(folder.glob("*.jpg"))) > 0


def test_registered_as_an_ensemble_without_moving_champion(exported: Exported, tmp_path: Path):
    import mlflow.pyfunc

    registration = exported.result.export.registration
    assert registration is not None and not registration.moved and registration.before is None
    assert "--promote" in registration.reason and "protocol" in registration.reason
    client = MlflowClient(exported.uri)
    version = client.get_model_version("bitmoji-gender", registration.version)
    assert version.tags["ensemble"] == "true"
    assert version.tags["ensemble_members"] == ",".join(exported.fold_runs)
    assert version.tags["val_acc"] == ""
    assert version.run_id == exported.cv_run_id
    assert not client.get_registered_model("bitmoji-gender").aliases
    local = Store.open(exported.uri).download(
        artifact_uri=f"models:/bitmoji-gender/{registration.version}", folder=tmp_path
    )
    image = next((exported.folder / "bitmoji" / "testimages").glob("*.jpg"))
    out = mlflow.pyfunc.load_model(str(local)).predict(pd.DataFrame({"image": [image.read_bytes()]}))
    reference = OnnxModel.load(exported.result.export.output)
    assert out["error"].iloc[0] == ""
    assert out["prob_male"].iloc[0] == pytest.approx(
        float(reference.predict(load_one(image, reference))[0, 1]), abs=TOLERANCE
    )


def test_the_registry_lines_say_champion_stays_none_when_there_was_none(exported: Exported):
    from bitmoji_ml.export.register import registration_lines

    registration = exported.result.export.registration
    _, champion = registration_lines(registration)  # raised AttributeError on `before` None
    assert champion.startswith(f"@champion stays (none), not v{registration.version}: ")


def load_one(image: Path, model: OnnxModel) -> np.ndarray:
    from bitmoji_ml.data.images import decode_image

    return decode_image(image, model.preprocess)[None]


def test_the_command_prints_members_and_cost_and_promote_moves_champion(
    exported: Exported, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", exported.uri)
    arguments = ["export-onnx", "--cv-run", exported.cv_run_id, "--lists", str(exported.lists), "--promote"]
    result = CliRunner().invoke(cli.app, [*arguments, "--output", str(exported.folder / "again.onnx")])
    assert result.exit_code == 0, result.output
    assert f"ensemble of {FOLDS} fold models of cv run {exported.cv_run_id}" in result.output
    assert "parity PASS" in result.output and "ms/image" in result.output and "one member" in result.output
    assert "already registered" in result.output  # the same members: the same version
    version = exported.result.export.registration.version
    assert (
        str(MlflowClient(exported.uri).get_model_version_by_alias("bitmoji-gender", "champion").version)
        == version
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--run-id", "abc"], "give one of --cv-run, --run-id and --checkpoint"),
        (["--quantize", "int8"], "--quantize does not apply to --cv-run"),
    ],
)
def test_cv_run_refuses_other_sources_and_int8(
    exported: Exported, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", exported.uri)
    arguments = ["export-onnx", "--cv-run", exported.cv_run_id, "--output", str(exported.folder / "x.onnx")]
    result = CliRunner().invoke(cli.app, [*arguments, *extra])
    assert result.exit_code == 1 and message in result.output


def test_a_run_that_is_not_a_cv_run_is_refused(exported: Exported, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", exported.uri)
    output = exported.folder / "fold.onnx"
    result = CliRunner().invoke(
        cli.app, ["export-onnx", "--cv-run", exported.fold_runs[0], "--output", str(output)]
    )
    assert result.exit_code == 1
    assert "is not a `bitmoji cv` run" in result.output and not output.exists()


def verdict_file(exported: Exported, path: Path, *, errors: float, log_loss: float) -> Path:
    """A protocol verdict for this recipe and data: the single model made 2 errors, log loss 0.06."""
    from bitmoji_ml.data.lists import read_manifest
    from bitmoji_ml.export.verdict import FORMAT

    metadata = OnnxModel.load(exported.result.export.output).metadata
    means = {
        "single": {"errors": 2.0, "log_loss": 0.06},
        "ensemble": {"errors": errors, "log_loss": log_loss},
    }
    data = {
        "format": FORMAT,
        "recipe": json.loads(metadata["recipe"]),
        "folds": FOLDS,
        "seeds": [0, 1, 2],
        "csv_sha256": read_manifest(exported.lists)["csv_sha256"],
        "means": means,
        "cost": {},
    }
    path.write_text(json.dumps(data))
    return path


def test_champion_moves_to_the_ensemble_only_with_a_verdict_that_shows_it_better(
    exported: Exported, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    from bitmoji_ml.export.verdict import read_verdict

    monkeypatch.setenv("MLFLOW_TRACKING_URI", exported.uri)
    client = MlflowClient(exported.uri)
    if client.get_registered_model("bitmoji-gender").aliases:  # an earlier test promoted it
        client.delete_registered_model_alias("bitmoji-gender", "champion")
    losing = verdict_file(exported, tmp_path / "losing.json", errors=2.0, log_loss=0.07)
    result = export_ensemble_job(
        cv_run_id=exported.cv_run_id,
        output=tmp_path / "a.onnx",
        store=Store.open(exported.uri),
        lists_dir=exported.lists,
        verdict=read_verdict(losing),
    )
    assert not result.export.registration.moved and "not better" in result.export.registration.reason
    assert result.decision[0].startswith("protocol verdict: not better")
    assert not client.get_registered_model("bitmoji-gender").aliases

    winning = verdict_file(exported, tmp_path / "winning.json", errors=1.67, log_loss=0.04)
    arguments = ["export-onnx", "--cv-run", exported.cv_run_id, "--lists", str(exported.lists)]
    printed = CliRunner().invoke(
        cli.app, [*arguments, "--verdict", str(winning), "--output", str(tmp_path / "b.onnx")]
    )
    assert printed.exit_code == 0, printed.output
    assert "protocol verdict: better, val errors 1.67 vs 2.00, log loss 0.0400 vs 0.0600" in printed.output
    version = exported.result.export.registration.version
    assert str(client.get_model_version_by_alias("bitmoji-gender", "champion").version) == version
