"""Training, resume, refit, cv and tune on lists of three classes (scikit-learn's digits 0, 1, 2
as tiny PNGs in one folder per class, tests/own_images.py, prepared): the network has one output per class, the checkpoints and
runs name the classes, the OOF file has a probability column per class, and lists that do not
fit the classes are refused. One training is shared by the module."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_store
from mlflow import MlflowClient
from own_images import write_digit_folders

from bitmoji_ml.checkpoints import TRAIN_STATE, model_from_checkpoint, read_checkpoint
from bitmoji_ml.data.classes import Classes, predicted_indices
from bitmoji_ml.data.layouts import Source, load_source
from bitmoji_ml.data.lists import write_lists
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.recipe import resolve_recipe
from bitmoji_ml.selection.oof import read_oof_csv
from bitmoji_ml.training import TrainJobResult, train_job

EXPERIMENT = "classes-test"
THREE = Classes(("zero", "one", "two"))
RECIPE = {"model": "compact", "image_size": 32, "epochs": 2, "batch_size": 8, "threads": 1}


@dataclasses.dataclass
class Trained:
    uri: str
    lists: Path
    result: TrainJobResult
    folder: Path


def digit_lists(root: Path) -> Path:
    """`prepare` of 16 digits of each of zero, one, two (classes in that order): 4 of each
    validate, 12 of each train. Returns the lists folder."""
    digits = write_digit_folders(root / "digits", classes=(0, 1, 2), per_class=16)
    write_lists(load_source(Source(digits, classes=THREE.names)), root / "lists", val_fraction=0.25, seed=0)
    return root / "lists"


def train(lists: Path, **overrides) -> TrainJobResult:
    recipe = resolve_recipe(overrides={**RECIPE, **overrides})
    return train_job(lists_dir=lists, experiment=EXPERIMENT, recipe=recipe)


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory: pytest.TempPathFactory, mlflow_store_template: Path) -> Trained:
    folder = tmp_path_factory.mktemp("classes")
    uri = copy_store(mlflow_store_template, folder)
    lists = digit_lists(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        result = train(lists)
    return Trained(uri, lists, result, folder)


@pytest.fixture
def store(three_classes: Trained, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", three_classes.uri)
    return MlflowClient(three_classes.uri)


def relabelled(lists: Path, folder: Path, classes: dict | None) -> Path:
    """A copy of `lists` whose manifest records `classes` (None: no classes, i.e. Bitmoji's)."""
    copy = Path(shutil.copytree(lists, folder / "relabelled"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.pop("classes")
    if classes is not None:
        manifest["classes"] = classes
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_the_network_has_one_output_per_class_and_its_checkpoints_name_them(three_classes: Trained):
    result = three_classes.result
    assert result.classes == THREE
    for name in ("best.pt", "last.pt"):
        payload = read_checkpoint(Path(result.best_checkpoint).with_name(name))
        assert payload["classes"] == {"names": ["zero", "one", "two"], "kaggle": False}
        model, preprocess = model_from_checkpoint(payload)
        images = torch.zeros((4, preprocess.size, preprocess.size, 3), dtype=torch.uint8)
        with torch.no_grad():
            assert model(images).shape == (4, 3)
    state = read_checkpoint(Path(result.best_checkpoint).with_name("last.pt"))[TRAIN_STATE]
    confusion = np.array(state["best_confusion"])  # the validation list: 4 images per class
    assert confusion.shape == (3, 3) and confusion.sum(axis=1).tolist() == [4, 4, 4]


def test_the_run_records_its_classes(three_classes: Trained, store: MlflowClient):
    run = store.get_run(three_classes.result.run_id)
    assert run.data.params["classes"] == "zero,one,two"
    assert 0 <= run.data.metrics["best_val_acc"] <= 1 and run.data.metrics["best_val_loss"] > 0
    recalls = [store.get_metric_history(run.info.run_id, f"val_recall_{name}") for name in THREE.names]
    assert [[metric.step for metric in history] for history in recalls] == [[1, 2]] * 3  # every epoch
    state = read_checkpoint(Path(three_classes.result.best_checkpoint).with_name("last.pt"))[TRAIN_STATE]
    confusion = np.array(state["best_confusion"])  # the best epoch's recalls are its diagonal's shares
    best = int(run.data.metrics["best_epoch"])
    assert [history[best - 1].value for history in recalls] == pytest.approx(np.diag(confusion) / 4)
    from bitmoji_ml import comparison
    from bitmoji_ml.tracking.listing import experiment_runs
    from bitmoji_ml.tracking.store import Store

    listed = experiment_runs(Store.open(), experiment=EXPERIMENT)
    arranged = comparison.arrange(listed.training)
    _, rows = comparison.runs_table(arranged, ["run", "classes"])
    assert [three_classes.result.run_id[:8], "zero,one,two"] in rows


def test_resume_continues_with_the_classes_and_refuses_lists_of_other_classes(
    three_classes: Trained, store: MlflowClient, tmp_path: Path
):
    run_id = three_classes.result.run_id
    renamed = relabelled(three_classes.lists, tmp_path / "a", {"names": ["zero", "one", "seven"]})
    bitmoji = relabelled(three_classes.lists, tmp_path / "b", None)
    for lists, named in ((renamed, "3 \\(zero, one, seven\\)"), (bitmoji, "2 \\(female, male\\)")):
        recipe = resolve_recipe(overrides={"epochs": 3, "threads": 1})
        with pytest.raises(
            BitmojiError, match=f"learnt 3 classes \\(zero, one, two\\); the lists in .* name {named}"
        ):
            train_job(lists_dir=lists, experiment=EXPERIMENT, recipe=recipe, resume_run_id=run_id)
    assert store.get_run(run_id).data.metrics["epochs_run"] == 2  # refused before training

    # The lists it trained on: the run continues, its checkpoints still naming the classes.
    recipe = resolve_recipe(overrides={"epochs": 3, "threads": 1})
    resumed = train_job(
        lists_dir=three_classes.lists, experiment=EXPERIMENT, recipe=recipe, resume_run_id=run_id
    )
    assert resumed.run_id == run_id and resumed.classes == THREE
    last = read_checkpoint(Path(resumed.best_checkpoint).with_name("last.pt"))
    assert last["classes"]["names"] == ["zero", "one", "two"] and last["epoch"] == 3


def test_an_all_labelled_refit_keeps_the_classes(three_classes: Trained, store: MlflowClient):
    refit = train(three_classes.lists, epochs=1, all_labelled=True)
    assert refit.best_val_acc is None and refit.train_images == 48
    payload = read_checkpoint(refit.best_checkpoint)
    assert payload["classes"] == THREE.to_dict()
    assert store.get_run(refit.run_id).data.params["classes"] == "zero,one,two"


def test_a_list_index_outside_the_classes_is_refused_naming_the_line(
    three_classes: Trained, store: MlflowClient, tmp_path: Path
):
    lists = Path(shutil.copytree(three_classes.lists, tmp_path / "lists"))
    lines = (lists / "train.txt").read_text().splitlines()
    image = lines[4].rsplit(" ", 1)[0]
    lines[4] = f"{image} 3"  # a fourth class the manifest does not name
    text = "".join(f"{line}\n" for line in lines)
    (lists / "train.txt").write_text(text)
    manifest = json.loads((lists / "manifest.json").read_text())
    manifest["files"]["train.txt"] = hashlib.sha256(text.encode()).hexdigest()
    (lists / "manifest.json").write_text(json.dumps(manifest))
    before = len(store.search_runs([store.get_experiment_by_name(EXPERIMENT).experiment_id]))
    named = rf"train\.txt:5: expected `<image path> <0\.\.2>`, got '{re.escape(image)} 3'"
    with pytest.raises(BitmojiError, match=named):
        train(lists)
    from bitmoji_ml.selection.cv import cv_job

    with pytest.raises(BitmojiError, match=named):
        cv_job(lists_dir=lists, experiment=EXPERIMENT, recipe=resolve_recipe(overrides=RECIPE), folds=2)
    assert len(store.search_runs([store.get_experiment_by_name(EXPERIMENT).experiment_id])) == before


@pytest.fixture(scope="module")
def three_class_cv(three_classes: Trained):
    """One 2-fold cv run of the three classes."""
    from bitmoji_ml.selection.cv import cv_job

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", three_classes.uri)
        recipe = resolve_recipe(overrides=RECIPE)
        return cv_job(lists_dir=three_classes.lists, experiment=EXPERIMENT, recipe=recipe, folds=2)


def test_cv_of_three_classes_writes_a_probability_column_per_class(
    three_class_cv, store: MlflowClient, tmp_path: Path
):
    result = three_class_cv
    parent = store.get_run(result.run_id)
    assert parent.data.params["classes"] == "zero,one,two"
    for fold in result.folds:
        assert store.get_run(fold.run_id).data.params["classes"] == "zero,one,two"
    downloaded = Path(store.download_artifacts(result.run_id, "oof_predictions.csv", str(tmp_path)))
    with open(downloaded, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["image", "label", "prob_zero", "prob_one", "prob_two", "fold"]
    assert len(rows) == 48 and {row["label"] for row in rows} == {"0", "1", "2"}
    assert all(not Path(row["image"]).is_absolute() for row in rows)  # portable names
    oof = read_oof_csv(downloaded, folder=Path(parent.data.tags["image_folder"]))
    assert oof.classes == THREE and oof.probabilities.shape == (48, 3)
    assert np.allclose(oof.probabilities.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(oof.labels, result.oof.labels)
    assert np.bincount(oof.labels).tolist() == [16, 16, 16]
    wrong = int((predicted_indices(oof.probabilities) != oof.labels).sum())
    assert result.metrics["oof_errors"] == wrong == parent.data.metrics["oof_errors"]
    assert result.metrics["oof_acc"] == pytest.approx(1 - wrong / 48)
    assert {"cv_acc", "cv_acc_std", "cv_loss"} <= set(parent.data.metrics)
    for index, name in enumerate(THREE.names):
        mine = oof.labels == index
        recall = float((predicted_indices(oof.probabilities)[mine] == index).mean())
        assert parent.data.metrics[f"oof_recall_{name}"] == pytest.approx(recall, abs=1e-6)


def test_the_folds_of_a_three_class_cv_export_as_one_model_of_three_outputs(
    three_classes: Trained, three_class_cv, store: MlflowClient, tmp_path: Path
):
    from typer.testing import CliRunner

    import cli
    from bitmoji_ml.serving.onnx_model import OnnxModel

    output = tmp_path / "ensemble.onnx"
    arguments = ["export-onnx", "--cv-run", three_class_cv.run_id, "--lists", str(three_classes.lists)]
    arguments += ["--experiment", EXPERIMENT, "--output", str(output), "--no-register"]
    exported = CliRunner().invoke(cli.app, arguments)
    assert exported.exit_code == 0, exported.output
    model = OnnxModel.load(output, threads=1)
    assert model.classes == THREE
    images = np.zeros((2, model.preprocess.size, model.preprocess.size, 3), dtype=np.uint8)
    assert model.predict(images).shape == (2, 3)


def test_cv_seeds_summarise_three_classes(three_classes: Trained, store: MlflowClient):
    from bitmoji_ml.selection.seeds import cv_seeds_job

    recipe = resolve_recipe(overrides={**RECIPE, "epochs": 1})
    result = cv_seeds_job(
        seeds=[0, 1], lists_dir=three_classes.lists, experiment=EXPERIMENT, recipe=recipe, folds=2
    )
    assert [run.oof.probabilities.shape for run in result.runs] == [(48, 3), (48, 3)]
    errors = [int((predicted_indices(run.oof.probabilities) != run.oof.labels).sum()) for run in result.runs]
    assert result.summary["oof_errors"].mean == pytest.approx(np.mean(errors))
    assert all(store.get_run(run.run_id).data.params["classes"] == "zero,one,two" for run in result.runs)


@pytest.mark.parametrize("use_cv", [False, True])
def test_tune_searches_a_recipe_for_three_classes(
    three_classes: Trained, store: MlflowClient, tmp_path: Path, use_cv: bool
):
    from bitmoji_ml.selection.tune import tune_job

    recipe = resolve_recipe(overrides={**RECIPE, "epochs": 1})
    result = tune_job(
        lists_dir=three_classes.lists,
        experiment=EXPERIMENT,
        trials=1,
        use_cv=use_cv,
        folds=2,
        study_name=f"three-{use_cv}",
        recipe=recipe,
        output=tmp_path / "best.toml",
    )
    assert (tmp_path / "best.toml").is_file()
    parent = store.get_run(result.run_id)
    trial = store.get_run(parent.data.tags["best_trial_run_id"])
    assert parent.data.params["classes"] == trial.data.params["classes"] == "zero,one,two"
    key = "cv_acc" if use_cv else "val_acc"
    assert 0 <= result.best_metrics[key] <= 1


@pytest.mark.slow
def test_torchrun_ranks_train_the_classes_of_the_lists(three_classes: Trained, tmp_path: Path):
    import sys

    from conftest import ROOT
    from test_distributed import job_environment, run_job

    shutil.copy(Path(three_classes.uri[len("sqlite:///") :]), tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"  # a copy: the job's run is the only new one there
    flags = ["--model", "compact", "--image-size", "32", "--epochs", "1", "--batch-size", "8"]
    command = [
        sys.executable,
        str(ROOT / "cli.py"),
        "train",
        "--nproc",
        "2",
        "--lists",
        str(three_classes.lists),
    ]
    done = run_job([*command, *flags, "--experiment", "torchrun-classes"], job_environment(uri))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 classes: zero, one, two" in done.stdout
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("torchrun-classes").experiment_id])
    assert run.data.params["world_size"] == "2" and run.data.params["classes"] == "zero,one,two"
    payload = read_checkpoint(
        client.download_artifacts(run.info.run_id, "checkpoints/best.pt", str(tmp_path))
    )
    assert payload["classes"] == THREE.to_dict()
    model, preprocess = model_from_checkpoint(payload)
    with torch.no_grad():
        assert model(torch.zeros((2, preprocess.size, preprocess.size, 3), dtype=torch.uint8)).shape == (2, 3)


def test_train_and_cv_say_which_classes_they_learnt(three_classes: Trained, store: MlflowClient):
    from typer.testing import CliRunner

    import cli

    flags = ["--lists", str(three_classes.lists), "--experiment", EXPERIMENT, "--model", "compact"]
    flags += ["--image-size", "32", "--epochs", "1", "--batch-size", "8", "--threads", "1"]
    trained = CliRunner().invoke(cli.app, ["train", *flags])
    assert trained.exit_code == 0, trained.output
    assert "3 classes: zero, one, two" in trained.output and "best val acc" in trained.output
    validated = CliRunner().invoke(cli.app, ["cv", "--folds", "2", *flags])
    assert validated.exit_code == 0, validated.output
    assert "3 classes: zero, one, two" in validated.output and "out-of-fold" in validated.output
    from bitmoji_ml.commands.views import classes_line
    from bitmoji_ml.data.classes import BITMOJI

    assert classes_line(BITMOJI) is None  # Bitmoji's output is as it was
