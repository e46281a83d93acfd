"""`bitmoji export-onnx`: parity with PyTorch, metadata, dynamic batch, the registry alias, int8
and every error case. One tiny run is trained and exported once per module (exports take
seconds); the tests share it."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import copy_store
from mlflow import MlflowClient
from typer.testing import CliRunner

import cli
from bitmoji_ml.checkpoints import model_from_checkpoint, read_checkpoint, save_checkpoint
from bitmoji_ml.data.dataset import load_dataset
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.data.lists import write_lists
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.export.job import ExportResult, export_job
from bitmoji_ml.export.parity import parity_table
from bitmoji_ml.models import DEFAULT_MODEL, create_model, model_spec
from bitmoji_ml.recipe import resolve_recipe
from bitmoji_ml.serving.onnx_model import OnnxModel
from bitmoji_ml.training import train_job

EXPERIMENT = "test-exp"
TOLERANCE = 1e-5
BATCHES = (1, 7, 64)
SIZE = model_spec(DEFAULT_MODEL).preprocess.size  # the default model's input side
FOREIGN_RUN_ID = "f" * 32  # a run id that no test store holds

runner = CliRunner()


def quiet(*_: Any) -> None:
    pass


@contextlib.contextmanager
def logged_lines():
    """The messages the library logs (at INFO and above) while the block runs."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("bitmoji_ml")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@dataclasses.dataclass
class Trained:
    """The module's tiny run, its store and its first export."""

    root: Path
    uri: str
    lists: Path
    train: dict[str, Any]
    export: ExportResult
    output: Path
    printed: list[str]
    champion_after_first: Any  # the registry's @champion version right after the first export

    @property
    def run_id(self) -> str:
        return self.train["run_id"]

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_store_template: Path, tiny_dataset_template: Path):
    """A private store, the tiny lists, a 1-epoch run and its export with default options."""
    root = tmp_path_factory.mktemp("export")
    uri = copy_store(mlflow_store_template, root)
    lists = root / "lists"
    write_lists(load_dataset(tiny_dataset_template), lists, val_fraction=0.25, seed=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        settings = {"epochs": 1, "batch_size": 16, "threads": 1}
        train = dataclasses.asdict(
            train_job(lists_dir=lists, experiment=EXPERIMENT, recipe=resolve_recipe(overrides=settings))
        )
        output = root / "models" / "bitmoji.onnx"
        with logged_lines() as printed:
            result = export_job(output=output, experiment=EXPERIMENT, lists_dir=lists)
        champion = MlflowClient(tracking_uri=uri).get_model_version_by_alias(EXPERIMENT, "champion")
        yield Trained(root, uri, lists, train, result, output, printed, champion)


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    """A compact model with random weights (seeded), saved as a checkpoint that names a run
    from another store."""
    torch.manual_seed(1234)
    model = create_model("compact").eval()
    path = tmp_path_factory.mktemp("random") / "random.pt"
    save_checkpoint(
        path,
        model,
        model="compact",
        preprocess=Preprocess(size=SIZE, resize=SIZE).to_dict(),
        epoch=0,
        metrics={"val_acc": 0.5, "val_loss": 0.69},
        config={"model": "compact"},
        mlflow_run_id=FOREIGN_RUN_ID,
    )
    return path


@pytest.fixture(scope="module")
def random_export(trained: Trained, random_checkpoint: Path, tmp_path_factory):
    """The random-weights checkpoint exported through the CLI with --checkpoint."""
    output = tmp_path_factory.mktemp("random-export") / "random.onnx"
    result = runner.invoke(
        cli.app,
        [
            "export-onnx",
            "--checkpoint",
            str(random_checkpoint),
            "--output",
            str(output),
            "--lists",
            str(output.parent / "no-lists"),
        ],
    )
    return result, output


@pytest.fixture(scope="module")
def second_export(trained: Trained):
    """A second export of the same run, with --quantize int8, through the CLI."""
    output = trained.root / "models" / "second.onnx"
    result = runner.invoke(
        cli.app,
        [
            "export-onnx",
            "--output",
            str(output),
            "--experiment",
            EXPERIMENT,
            "--lists",
            str(trained.lists),
            "--quantize",
            "int8",
        ],
    )
    return result, output


def torch_prob(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """PyTorch's (n, classes) probabilities."""
    with torch.no_grad():
        logits = model(torch.from_numpy(images))
    return torch.softmax(logits, dim=1).numpy()


def assert_independent_parity(onnx_path: Path, checkpoint: Path) -> None:
    """onnxruntime on the file vs the checkpoint's PyTorch model, random uint8 batches."""
    model, preprocess = model_from_checkpoint(read_checkpoint(checkpoint))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(99)
    for batch in BATCHES:
        images = rng.integers(0, 256, size=(batch, preprocess.size, preprocess.size, 3), dtype=np.uint8)
        prob, logits = session.run(["probabilities", "logits"], {"images": images})
        expected = torch_prob(model, images)
        assert prob.shape == (batch, 2) and logits.shape == (batch, 2)
        assert np.abs(prob - expected).max() <= TOLERANCE, batch
        assert ((prob[:, 1] >= 0.5) == (expected[:, 1] >= 0.5)).all(), batch


def assert_parity_report(path: Path, with_validation: bool) -> dict:
    report = json.loads(path.read_text())
    assert report["passed"] is True
    assert report["tolerance"] == TOLERANCE
    names = [case["case"] for case in report["cases"]]
    expected = [f"random uint8 batch {batch}" for batch in BATCHES]
    assert names == (["validation images"] if with_validation else []) + expected
    for case in report["cases"]:
        assert case["max_abs_diff_prob"] <= TOLERANCE, case
        assert case["same_class"] == case["images"], case
    assert [case["images"] for case in report["cases"][-3:]] == list(BATCHES)
    return report


def error_of(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.stderr.startswith("error: "), result.stderr
    return result.stderr


# --------------------------------------------------------------------------------------------
# The default export: the experiment's best logged model


def test_export_writes_model_and_passing_parity_report(trained: Trained):
    assert trained.output.is_file()
    assert trained.export.output == trained.output
    assert trained.export.run_id == trained.run_id
    report = assert_parity_report(trained.output.with_suffix(".parity.json"), with_validation=True)
    assert report == trained.export.report.to_dict()
    validation = report["cases"][0]
    assert validation["images"] == 10  # the tiny lists: 40 labelled images, val fraction 0.25
    shown = parity_table(trained.export.report)  # what `export-onnx` prints (commands/views.py)
    assert "parity PASS" in shown
    assert "validation images" in shown
    # No temporary file is left beside the model.
    assert not [p for p in trained.output.parent.iterdir() if p.name.startswith(".")]


def test_exported_graph_passes_checker_and_has_the_documented_interface(trained: Trained):
    model = onnx.load(str(trained.output))
    onnx.checker.check_model(model, full_check=True)
    (graph_input,) = model.graph.input
    assert graph_input.name == "images"
    tensor = graph_input.type.tensor_type
    assert tensor.elem_type == onnx.TensorProto.UINT8
    dims = tensor.shape.dim
    assert len(dims) == 4
    assert dims[0].dim_param and not dims[0].HasField("dim_value"), "batch must be symbolic"
    assert [d.dim_value for d in dims[1:]] == [SIZE, SIZE, 3]
    assert [output.name for output in model.graph.output] == ["probabilities", "logits"]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim[1:]] == [2]
    assert model.doc_string == "Bitmoji face gender classifier (Kaggle labels: 1 male, -1 female)"
    assert {opset.domain: opset.version for opset in model.opset_import}[""] >= 17


def test_trained_model_parity_at_batches_1_7_64(trained: Trained):
    assert_independent_parity(trained.output, Path(trained.train["best_checkpoint"]))


def test_dynamic_batch(trained: Trained):
    model = OnnxModel.load(trained.output, threads=1)
    torch_model, preprocess = model_from_checkpoint(read_checkpoint(trained.train["best_checkpoint"]))
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(130, SIZE, SIZE, 3), dtype=np.uint8)
    whole = model.predict(images)
    assert whole.shape == (130, 2) and whole.dtype == np.float32
    for batch in (1, 2, 3, 64, 129):
        part = model.predict(images[:batch])
        assert part.shape == (batch, 2)
        np.testing.assert_allclose(part, whole[:batch], atol=TOLERANCE)
    np.testing.assert_allclose(whole, torch_prob(torch_model, images), atol=TOLERANCE)
    prob, logits = model.session.run(None, {"images": images[:5]})
    np.testing.assert_allclose(prob, torch.softmax(torch.from_numpy(logits), 1).numpy(), atol=1e-6)


def test_metadata_round_trip(trained: Trained):
    payload = read_checkpoint(trained.train["best_checkpoint"])
    from_onnx = {entry.key: entry.value for entry in onnx.load(str(trained.output)).metadata_props}
    loaded = OnnxModel.load(trained.output, threads=1)
    assert loaded.metadata == from_onnx
    meta = loaded.metadata
    assert json.loads(meta["bitmoji.preprocess"]) == payload["preprocess"]
    assert loaded.preprocess == Preprocess.from_dict(payload["preprocess"])
    assert json.loads(meta["class_names"]) == ["female", "male"]
    assert json.loads(meta["kaggle_label_mapping"]) == {"male": 1, "female": -1}
    assert meta["model_name"] == DEFAULT_MODEL == payload["model"]
    assert meta["mlflow_run_id"] == trained.run_id
    assert meta["checkpoint_step"] == str(payload["epoch"]) == "1"
    assert float(meta["val_acc"]) == pytest.approx(payload["metrics"]["val_acc"], abs=1e-6)
    assert float(meta["val_acc"]) == pytest.approx(trained.train["best_val_acc"], abs=1e-6)
    assert meta["data_digest"] == payload["data_digest"] != ""
    manifest = json.loads((trained.lists / "manifest.json").read_text())
    assert meta["data_digest"] == manifest["digest"]
    exported_at = datetime.datetime.fromisoformat(meta["exported_at"])
    assert exported_at.tzinfo is not None
    assert abs(datetime.datetime.now(datetime.UTC) - exported_at) < datetime.timedelta(hours=1)
    versions = json.loads(meta["versions"])
    assert versions["torch"] == torch.__version__
    assert versions["onnx"] == onnx.__version__
    assert versions["onnxruntime"] == ort.__version__
    assert {"bitmoji_ml", "opset"} <= set(versions)


# --------------------------------------------------------------------------------------------
# Random weights through --checkpoint


def test_random_weights_checkpoint_export(random_export, random_checkpoint: Path):
    result, output = random_export
    assert result.exit_code == 0, result.output
    assert output.is_file()
    assert_parity_report(output.with_suffix(".parity.json"), with_validation=False)
    assert "parity runs on random batches only" in result.stdout
    assert "parity PASS" in result.stdout
    # The checkpoint names a run this store does not hold: exported, but not registered.
    assert f"not registered: run {FOREIGN_RUN_ID}" in result.stdout
    meta = OnnxModel.load(output, threads=1).metadata
    assert meta["mlflow_run_id"] == FOREIGN_RUN_ID
    assert meta["checkpoint_step"] == "0"
    assert meta["val_acc"] == "0.500000"
    assert_independent_parity(output, random_checkpoint)


def test_parity_failure_is_an_error_and_writes_nothing(
    trained: Trained, random_checkpoint: Path, tmp_path: Path, monkeypatch
):
    """Ship a graph that is not the checkpoint's (the trained model's, for random weights):
    onnxruntime and PyTorch disagree, so the export must stop and write nothing."""
    import bitmoji_ml.export.job as export

    def wrong_graph(model, preprocess, path):
        shutil.copy(trained.output, path)

    monkeypatch.setattr(export, "export_graph", wrong_graph)
    output = tmp_path / "out" / "model.onnx"
    output.parent.mkdir()
    fresh = tmp_path / "fresh" / "model.onnx"
    with pytest.raises(BitmojiError, match="parity failed"):
        export_job(output=fresh, checkpoint=random_checkpoint, register=False)
    assert not fresh.exists(), "a failed export must not create the output file"
    output.write_bytes(b"the previous, good model")
    with pytest.raises(BitmojiError) as caught:
        export_job(output=output, checkpoint=random_checkpoint, register=False)
    message = str(caught.value)
    assert "parity failed: prob tolerance on random uint8 batch 1" in message
    assert "was not written" in message and str(output) in message
    delta = float(re.search(r"max \|Δ prob\| (\S+) > 1e-05", message).group(1))
    assert delta > TOLERANCE
    # The previous model is untouched; no report, no temporary file.
    assert list(output.parent.iterdir()) == [output]
    assert output.read_bytes() == b"the previous, good model"


def test_class_flip_within_tolerance_is_reported_as_a_class_failure(tmp_path: Path, monkeypatch):
    """PyTorch says P(male) = 0.5 exactly (male), onnxruntime 0.499999 (female): |Δ prob| is
    within tolerance but the class flips. The message must name the class check, the case and
    the numbers, not report the (passing) largest |Δ prob| as the reason."""
    model = create_model("compact").eval()
    with torch.no_grad():
        model.net[-1].weight.zero_()  # equal logits: P(male) is exactly 0.5 for every image
        model.net[-1].bias.zero_()
    checkpoint = tmp_path / "undecided.pt"
    save_checkpoint(
        checkpoint,
        model,
        model="compact",
        preprocess=Preprocess(size=SIZE, resize=SIZE).to_dict(),
        epoch=0,
        metrics={},
        config={"model": "compact"},
    )
    real_predict = OnnxModel.predict_batched

    def slightly_lower(self, images, batch_size=64):  # P(male) only: 0.499999 against P(female) 0.5
        return real_predict(self, images, batch_size) - np.array([0, 1e-6], dtype=np.float32)

    monkeypatch.setattr(OnnxModel, "predict_batched", slightly_lower)
    output = tmp_path / "m.onnx"
    with pytest.raises(BitmojiError) as caught:
        export_job(output=output, checkpoint=checkpoint, register=False)
    message = str(caught.value)
    assert message.startswith("parity failed: class agreement on random uint8 batch 1: ")
    assert "1 of 1 image(s) change class, P(male) PyTorch vs onnxruntime 0.500000 vs 0.499999" in message
    assert "class agreement on random uint8 batch 64: 64 of 64 image(s)" in message
    assert "(within tolerance)" in message
    assert "prob tolerance" not in message
    assert not output.exists()


# --------------------------------------------------------------------------------------------
# The registry and a second export (int8)


def test_export_logs_to_the_run_and_registers_champion(trained: Trained):
    assert trained.export.registered_version == "1"
    champion = trained.champion_after_first
    assert str(champion.version) == "1"
    assert champion.run_id == trained.run_id
    client = trained.client()
    logged = {artifact.path for artifact in client.list_artifacts(trained.run_id, "onnx")}
    assert {"onnx/bitmoji.onnx", "onnx/bitmoji.parity.json"} <= logged
    # Registering reopened the run; it must still read FINISHED.
    assert client.get_run(trained.run_id).info.status == "FINISHED"


def registered_versions(client: MlflowClient) -> dict[str, Any]:
    return {str(v.version): v for v in client.search_model_versions(f"name = '{EXPERIMENT}'")}


def champion_version(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(EXPERIMENT, "champion").version)


def test_the_version_is_tagged_with_the_checkpoint_it_holds(trained: Trained):
    from bitmoji_ml.files import file_sha256

    tags = registered_versions(trained.client())["1"].tags
    assert tags["checkpoint_sha256"] == file_sha256(Path(trained.train["best_checkpoint"]))
    assert tags["format"] == "fp32"
    assert float(tags["val_acc"]) == pytest.approx(trained.train["best_val_acc"])
    assert tags["data_digest"] == json.loads((trained.lists / "manifest.json").read_text())["digest"]
    assert trained.export.registration.moved and trained.export.registration.before is None


def test_second_export_of_the_run_with_int8(trained: Trained, second_export):
    """The same checkpoint again, with --quantize int8: when fp32 stays the champion file, it is
    the version registered already; when int8 wins, it is a new version (another file), and
    @champion moves to it only if its own val acc is not lower (the same lists)."""
    result, _ = second_export
    assert result.exit_code == 0, result.output
    client = trained.client()
    report = json.loads((trained.root / "models" / "second.int8.parity.json").read_text())
    assert f"champion: {'int8' if report['int8_champion'] else 'fp32'}" in result.stdout
    int8_versions = [v for v in registered_versions(client).values() if v.tags.get("format") == "int8"]
    logged = {artifact.path for artifact in client.list_artifacts(trained.run_id, "onnx")}
    if not report["int8_champion"]:
        assert f"already registered: {EXPERIMENT} v1 " in result.stdout
        assert "no new version" in result.stdout
        assert not int8_versions and "onnx/second.onnx" not in logged
        return
    (int8_version,) = int8_versions
    assert f"registered {EXPERIMENT} v{int8_version.version} " in result.stdout
    assert {"onnx/second.onnx", "onnx/second.int8.onnx", "onnx/second.parity.json"} <= logged
    moved = report["int8_val_acc"] >= trained.train["best_val_acc"]
    assert (champion_version(client) == str(int8_version.version)) is moved
    assert ("@champion: v1 " in result.stdout) is moved


def test_export_again_reuses_its_version_and_champion_moves_only_with_a_reason(
    trained: Trained, tmp_path: Path
):
    """Issue 22 item 4: exporting one checkpoint again registers no new version; a worse model
    is registered beside @champion, which stays, with the reason; --promote moves it, saying
    from what to what."""
    client = trained.client()
    before_versions, before_champion = set(registered_versions(client)), champion_version(client)
    best = Path(trained.train["best_checkpoint"])
    common = ["--lists", str(trained.lists), "--experiment", EXPERIMENT]
    again = runner.invoke(
        cli.app, ["export-onnx", "--checkpoint", str(best), "--output", str(tmp_path / "again.onnx"), *common]
    )
    assert again.exit_code == 0, again.output
    assert f"already registered: {EXPERIMENT} v1 (run " in again.stdout
    assert set(registered_versions(client)) == before_versions
    assert champion_version(client) == before_champion

    payload = read_checkpoint(best)
    network, _ = model_from_checkpoint(payload)
    fields = {key: value for key, value in payload.items() if key not in ("format", "state_dict")}
    worse = tmp_path / "worse.pt"
    save_checkpoint(worse, network, **{**fields, "metrics": {**payload["metrics"], "val_acc": 0.01}})
    output = str(tmp_path / "worse.onnx")
    kept = runner.invoke(cli.app, ["export-onnx", "--checkpoint", str(worse), "--output", output, *common])
    assert kept.exit_code == 0, kept.output
    (new,) = set(registered_versions(client)) - before_versions
    assert f"registered {EXPERIMENT} v{new} (run {trained.run_id[:8]}, val acc 1.00%)" in kept.stdout
    assert f"@champion stays v{before_champion} (run " in kept.stdout
    assert "is lower than" in kept.stdout and "pass --promote" in kept.stdout
    assert champion_version(client) == before_champion

    promoted = runner.invoke(
        cli.app, ["export-onnx", "--checkpoint", str(worse), "--output", output, "--promote", *common]
    )
    assert promoted.exit_code == 0, promoted.output
    assert f"already registered: {EXPERIMENT} v{new} " in promoted.stdout
    assert f"@champion: v{before_champion} (run {trained.run_id[:8]}, val acc " in promoted.stdout
    assert f"-> v{new} (run {trained.run_id[:8]}, val acc 1.00%): --promote given" in promoted.stdout
    assert champion_version(client) == new
    assert set(registered_versions(client)) == before_versions | {new}


def test_a_folder_where_the_report_goes_leaves_the_model_as_it_was(random_checkpoint: Path, tmp_path: Path):
    """Issue 17 defect b: the ONNX file and its parity report are replaced both or neither."""
    output = tmp_path / "models" / "bitmoji.onnx"
    output.parent.mkdir()
    output.write_bytes(b"the previous, good model")
    output.with_suffix(".parity.json").mkdir()
    result = runner.invoke(
        cli.app,
        ["export-onnx", "--checkpoint", str(random_checkpoint), "--output", str(output), "--no-register"],
    )
    assert f"cannot write {output.with_suffix('.parity.json')}: it is a folder" in error_of(result)
    assert output.read_bytes() == b"the previous, good model"
    assert sorted(p.name for p in output.parent.iterdir()) == ["bitmoji.onnx", "bitmoji.parity.json"]


def test_quantize_int8_writes_the_int8_model_and_compares(second_export):
    result, output = second_export
    assert result.exit_code == 0, result.output
    int8 = output.with_name("second.int8.onnx")
    assert output.is_file() and int8.is_file()
    assert int8.stat().st_size < output.stat().st_size
    int8_model = OnnxModel.load(int8, threads=1)
    assert int8_model.metadata["quantization"].startswith("int8")
    report = json.loads(output.with_name("second.int8.parity.json").read_text())
    assert json.loads(int8_model.metadata["bitmoji.int8_parity"]) == report
    assert [case["case"] for case in report["cases"]] == ["validation images", "test-folder images"]
    assert "p99 |Δ prob|" in result.stdout
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.split()}
    assert "images/s" in result.stdout and "val acc" in result.stdout
    assert rows["fp32"][1].endswith("%") and rows["int8"][1].endswith("%")
    for name in ("fp32", "int8"):
        assert float(rows[name][2].replace(",", "")) > 0, rows[name]  # images/s
    prob = int8_model.predict(np.zeros((3, SIZE, SIZE, 3), dtype=np.uint8))
    assert prob.shape == (3, 2) and np.all((prob >= 0) & (prob <= 1))


# --------------------------------------------------------------------------------------------
# Errors through the CLI: exit code 1, one clear line, nothing written


def test_no_runs_yet(mlflow_store: str, tmp_path: Path):
    output = tmp_path / "m.onnx"
    result = runner.invoke(cli.app, ["export-onnx", "--output", str(output), "--experiment", "never"])
    message = error_of(result)
    assert "no runs yet" in message and "bitmoji train" in message
    MlflowClient(tracking_uri=mlflow_store).create_experiment("empty")
    result = runner.invoke(cli.app, ["export-onnx", "--output", str(output), "--experiment", "empty"])
    message = error_of(result)
    assert "no runs yet" in message and "no trained checkpoint" in message
    assert not output.exists()


def test_unknown_run_id(trained: Trained, tmp_path: Path):
    output = tmp_path / "m.onnx"
    unknown = "0123456789abcdef0123456789abcdef"
    result = runner.invoke(cli.app, ["export-onnx", "--output", str(output), "--run-id", unknown])
    message = error_of(result)
    assert f"unknown run id {unknown!r}" in message
    assert not output.exists()


def test_checkpoint_of_an_unknown_model(tmp_path: Path):
    checkpoint = tmp_path / "mystery.pt"
    save_checkpoint(
        checkpoint,
        create_model("compact"),
        model="mystery-net",
        preprocess=Preprocess().to_dict(),
        epoch=1,
        metrics={},
        config={},
    )
    output = tmp_path / "m.onnx"
    result = runner.invoke(cli.app, ["export-onnx", "--checkpoint", str(checkpoint), "--output", str(output)])
    message = error_of(result)
    assert "unknown model 'mystery-net'" in message and "compact" in message
    assert not output.exists()


def test_missing_checkpoint_file(tmp_path: Path):
    result = runner.invoke(
        cli.app,
        ["export-onnx", "--checkpoint", str(tmp_path / "nope.pt"), "--output", str(tmp_path / "m.onnx")],
    )
    assert "not found" in error_of(result)


def test_unwritable_output_path(random_checkpoint: Path, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    output = blocker / "models" / "m.onnx"
    result = runner.invoke(
        cli.app, ["export-onnx", "--checkpoint", str(random_checkpoint), "--output", str(output)]
    )
    message = error_of(result)
    assert "cannot write" in message and str(output) in message
    assert blocker.read_text() == "not a folder"


def test_run_id_and_checkpoint_together(random_checkpoint: Path, tmp_path: Path):
    output = tmp_path / "m.onnx"
    result = runner.invoke(
        cli.app,
        ["export-onnx", "--run-id", "abc", "--checkpoint", str(random_checkpoint), "--output", str(output)],
    )
    assert "not both" in error_of(result)
    assert not output.exists()


def test_unsupported_quantization(random_checkpoint: Path, tmp_path: Path):
    output = tmp_path / "m.onnx"
    result = runner.invoke(
        cli.app,
        [
            "export-onnx",
            "--checkpoint",
            str(random_checkpoint),
            "--output",
            str(output),
            "--quantize",
            "int4",
        ],
    )
    assert "only int8" in error_of(result)
    assert not output.exists()
