"""int8 quantisation: its own parity report against fp32 (validation and test-folder images),
written beside the int8 file and stored in its metadata, and the gate that makes int8 champion
only when it agrees on >= 99.9 % of every image set and is faster on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from random_model import export_network

from bitmoji_ml import quantize
from bitmoji_ml.data.cache import load_list
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import DEFAULT_MODEL, create_model
from bitmoji_ml.quantize import (
    META_INT8_PARITY,
    MIN_AGREEMENT,
    Int8Case,
    Int8Report,
    champion_decision,
    quantize_beside,
)
from bitmoji_ml.serving.onnx_model import OnnxModel


def report(same: tuple[int, ...] = (1000, 1084), fp32_ms: float = 0.2, int8_ms: float = 0.1) -> Int8Report:
    cases = [
        Int8Case("validation images", 1000, same[0], 0.01, 0.001),
        Int8Case("test-folder images", 1084, same[1], 0.02, 0.002),
    ]
    return Int8Report(cases, fp32_ms, int8_ms)


def test_int8_is_champion_when_it_agrees_and_is_faster():
    assert MIN_AGREEMENT == 0.999
    decision = champion_decision(report(same=(999, 1083)))  # 99.9 % and 99.91 %: enough
    assert decision.int8
    assert "faster" in decision.reason


@pytest.mark.parametrize("same", [(998, 1084), (1000, 1082)])
def test_fp32_stays_champion_when_any_image_set_disagrees(same):
    decision = champion_decision(report(same=same))
    assert not decision.int8
    assert "agrees with fp32 on" in decision.reason
    assert ("validation" if same[0] < 999 else "test-folder") in decision.reason


@pytest.mark.parametrize("int8_ms", [0.2, 0.3])
def test_fp32_stays_champion_when_int8_is_not_faster(int8_ms):
    decision = champion_decision(report(int8_ms=int8_ms))
    assert not decision.int8
    assert "not faster" in decision.reason


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory) -> Path:
    """A random-weights default model exported without MLflow."""
    torch.manual_seed(0)
    return export_network(tmp_path_factory.mktemp("quantize"), create_model(DEFAULT_MODEL).eval())[1]


@pytest.fixture
def fp32_copy(fp32_model: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bitmoji.onnx"
    copy.write_bytes(fp32_model.read_bytes())
    return copy


def quantize_with(fp32: Path, lists: Path):
    images, labels, _ = load_list(lists / "val.txt", OnnxModel.load(fp32).preprocess)
    return quantize_beside(fp32_path=fp32, lists_dir=lists, validation=(images, labels))


def test_report_is_written_stored_in_the_model_and_printed(fp32_copy: Path, tiny_lists: Path, caplog):
    caplog.set_level("INFO", logger="bitmoji_ml")
    result = quantize_with(fp32_copy, tiny_lists)
    assert result.path == fp32_copy.with_name("bitmoji.int8.onnx")
    assert result.report_path == fp32_copy.with_name("bitmoji.int8.parity.json")
    written = json.loads(result.report_path.read_text())
    stored = json.loads(OnnxModel.load(result.path).metadata[META_INT8_PARITY])
    assert written == stored
    cases = {case["case"]: case for case in written["cases"]}
    assert cases["validation images"]["images"] == 10  # the tiny val list
    assert cases["test-folder images"]["images"] == 8  # the tiny test folder
    for case in cases.values():
        assert 0 <= case["p99_abs_diff_prob"] <= case["max_abs_diff_prob"] <= 1
        assert case["agreement"] == case["same_class"] / case["images"]
    assert written["int8_champion"] == result.decision.int8 == champion_decision(result.report).int8
    assert result.champion == (result.path if result.decision.int8 else fp32_copy)
    assert "p99 |Δ prob|" in caplog.text and "test-folder images" in caplog.text
    assert f"champion: {'int8' if result.decision.int8 else 'fp32'}" in caplog.text


@pytest.mark.parametrize(
    ("same_share", "int8_faster", "champion"),
    [(1.0, True, "int8"), (1.0, False, "fp32"), (0.5, True, "fp32")],
)
def test_the_gate_decides_the_champion_file(
    fp32_copy: Path, tiny_lists: Path, monkeypatch, same_share, int8_faster, champion
):
    def timing(models, images):
        return {"fp32": 0.2, "int8": 0.1 if int8_faster else 0.3}

    def compare(fp32, int8, image_sets):
        return [
            Int8Case(name, len(x), round(len(x) * same_share), 0.0, 0.0) for name, x in image_sets.items()
        ]

    monkeypatch.setattr(quantize, "ms_per_image", timing)
    monkeypatch.setattr(quantize, "compare_int8", compare)
    result = quantize_with(fp32_copy, tiny_lists)
    expected = result.path if champion == "int8" else fp32_copy
    assert result.champion == expected
    assert json.loads(result.report_path.read_text())["int8_champion"] is (champion == "int8")


def test_quantize_needs_the_validation_list(fp32_copy: Path):
    with pytest.raises(BitmojiError, match="bitmoji prepare"):
        quantize_beside(fp32_path=fp32_copy, lists_dir=None, validation=None)
    assert not fp32_copy.with_name("bitmoji.int8.onnx").exists()
