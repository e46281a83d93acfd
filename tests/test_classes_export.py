"""Export of a model of N classes (issue 18): the graph's `probabilities` [batch, N] and `logits`,
the class names in the metadata, parity and int8 agreement over every class, the ensemble's
same-classes rule; and a Bitmoji file exported the round-1 way (`prob_male`) still loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from classes_models import (
    PREPROCESS,
    THREE,
    export_classes_model,
    export_round1,
    noise_images,
    save_model_checkpoint,
    spread_network,
)

from bitmoji_ml.data.classes import BITMOJI, Classes, predicted_indices
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.export.ensemble import check_same_classes
from bitmoji_ml.export.int8 import compare_int8, quantize_int8
from bitmoji_ml.export.job import export_job
from bitmoji_ml.export.source import ExportSource
from bitmoji_ml.serving.onnx_model import OnnxModel

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    return export_classes_model(tmp_path_factory.mktemp("three"))


def torch_probabilities(network: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(network(torch.from_numpy(images)), dim=1).numpy()


def test_the_graph_outputs_every_class_and_names_them(three):
    path, network = three
    graph = onnx.load(str(path))
    outputs = {output.name: output for output in graph.graph.output}
    assert list(outputs) == ["probabilities", "logits"]
    for output in outputs.values():
        assert [d.dim_value for d in output.type.tensor_type.shape.dim[1:]] == [3]
    metadata = {entry.key: entry.value for entry in graph.metadata_props}
    assert json.loads(metadata["class_names"]) == ["a", "b", "c"]
    assert "kaggle_label_mapping" not in metadata
    assert "male" not in metadata["outputs"] and "(a, b, c)" in metadata["outputs"]
    assert "Bitmoji" not in graph.doc_string and "a, b, c" in graph.doc_string
    model = OnnxModel.load(path, threads=1)
    assert model.classes == THREE
    images = noise_images(70, seed=5)
    prob = model.predict_batched(images, 32)
    assert prob.shape == (70, 3) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, torch_probabilities(network, images), atol=TOLERANCE)
    assert set(predicted_indices(prob)) == {0, 1, 2}, "the test network should predict every class"
    assert model.predict_batched(images[:0]).shape == (0, 3)


def test_the_parity_report_holds_every_class(three):
    report = json.loads(three[0].with_suffix(".parity.json").read_text())
    assert report["passed"] and [case["images"] for case in report["cases"]] == [1, 7, 64]
    assert all(case["same_class"] == case["images"] for case in report["cases"])


def test_parity_catches_a_change_in_a_class_other_than_the_second(tmp_path: Path, monkeypatch):
    """Swap P(a) and P(c) in onnxruntime's answer: round 1's check (P(male) only, column 1)
    would see nothing; the N-class check fails on the probabilities and names the classes."""
    checkpoint = save_model_checkpoint(tmp_path / "m.pt", spread_network(THREE), THREE)
    real = OnnxModel.predict_batched
    monkeypatch.setattr(OnnxModel, "predict_batched", lambda self, x, b=64: real(self, x, b)[:, ::-1])
    with pytest.raises(BitmojiError) as caught:
        export_job(output=tmp_path / "m.onnx", checkpoint=checkpoint, register=False)
    message = str(caught.value)
    assert "prob tolerance on random uint8 batch 64" in message
    assert "class agreement on random uint8 batch 64" in message
    assert "PyTorch vs onnxruntime" in message and ("P(a)" in message or "P(c)" in message)
    assert not (tmp_path / "m.onnx").exists()


def test_int8_agreement_is_the_predicted_class_over_every_class(three, tmp_path: Path):
    fp32_path = three[0]
    int8_path = tmp_path / "m.int8.onnx"
    quantize_int8(fp32_path, int8_path, noise_images(64, seed=9))
    fp32, int8 = OnnxModel.load(fp32_path, 1), OnnxModel.load(int8_path, 1)
    assert int8.classes == THREE
    images = noise_images(200, seed=11)
    (case,) = compare_int8(fp32, int8, {"noise": images})
    reference, quantized = fp32.predict_batched(images), int8.predict_batched(images)
    assert quantized.shape == (200, 3)
    # int8 probabilities come in steps of 1/255, so ties happen: the rule's (ties to the later
    # class), not argmax's, decides.
    assert case.same_class == int((predicted_indices(reference) == predicted_indices(quantized)).sum())
    assert case.max_abs_diff_prob == pytest.approx(float(np.abs(reference - quantized).max()))


def source(names: tuple[str, ...] | None, index: int) -> ExportSource:
    classes = None if names is None else Classes(names).to_dict()
    return ExportSource({"classes": classes}, f"run{index}", f"fold {index} run run{index} last.pt")


def test_ensemble_members_must_have_the_same_classes():
    assert check_same_classes([source(("a", "b", "c"), 1), source(("a", "b", "c"), 2)]) == THREE
    assert check_same_classes([source(None, 1), source(None, 2)]) == BITMOJI
    with pytest.raises(BitmojiError) as caught:
        check_same_classes([source(("a", "b", "c"), 1), source(("a", "c", "b"), 2)])
    message = str(caught.value)
    assert "fold 2 run run2 last.pt has classes a, c, b" in message and "a, b, c" in message


def test_a_round1_prob_male_file_loads_and_predicts_both_classes(tmp_path: Path):
    network = spread_network(BITMOJI, seed=3)
    path = export_round1(tmp_path / "round1.onnx", network)
    model = OnnxModel.load(path, threads=1)
    assert model.classes == BITMOJI and model.output == "prob_male"
    images = noise_images(20, seed=4, size=PREPROCESS.size)
    prob = model.predict_batched(images, 8)
    (prob_male,) = model.session.run(["prob_male"], {"images": images})
    assert prob.shape == (20, 2) and prob.dtype == np.float32
    np.testing.assert_array_equal(prob[:, 1], prob_male)
    np.testing.assert_allclose(prob[:, 0], 1 - prob_male, atol=1e-7)
    np.testing.assert_allclose(prob, torch_probabilities(network, images), atol=TOLERANCE)


def test_a_file_whose_class_names_do_not_fit_its_output_is_refused(three, tmp_path: Path):
    from bitmoji_ml.export.graph import write_metadata

    path = tmp_path / "lying.onnx"
    path.write_bytes(three[0].read_bytes())
    metadata = dict(OnnxModel.load(three[0], threads=1).metadata, class_names=json.dumps(["a", "b"]))
    write_metadata(path, metadata, full_check=False)
    with pytest.raises(BitmojiError, match=r"output 'probabilities' has shape .*expected \[batch, 2\]"):
        OnnxModel.load(path, threads=1)
    metadata["class_names"] = json.dumps(["a", "b", "a"])
    write_metadata(path, metadata, full_check=False)
    with pytest.raises(BitmojiError, match=r"lying.onnx: class name\(s\) 'a' appear twice"):
        OnnxModel.load(path, threads=1)


def test_an_ensemble_of_three_class_members_outputs_their_mean_probabilities(tmp_path: Path):
    from bitmoji_ml.export.ensemble import Ensemble
    from bitmoji_ml.export.graph import metadata_for
    from bitmoji_ml.export.job import export_checked

    members = [spread_network(THREE, seed) for seed in (0, 1)]
    payload = {"model": "compact", "classes": THREE.to_dict()}
    output = tmp_path / "ensemble.onnx"
    report, _, _ = export_checked(
        Ensemble(members).eval(),
        PREPROCESS,
        metadata_for(payload, None, PREPROCESS),
        output=output,
        work=tmp_path,
        lists_dir=None,
    )
    assert report.passed
    model = OnnxModel.load(output, threads=1)
    images = noise_images(40, seed=6)
    mean = np.mean([torch_probabilities(member, images) for member in members], axis=0)
    assert model.classes == THREE
    np.testing.assert_allclose(model.predict(images), mean, atol=TOLERANCE)
