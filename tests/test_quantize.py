"""int8 quantisation: its own parity report against fp32 (validation and test-folder images),
written beside the int8 file and stored in its metadata, its own val_acc, and the gate that makes
int8 champion only when it agrees on >= 99.9 % of every image set and is faster on this machine
by the margin, over interleaved timing rounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from random_model import export_network

from bitmoji_ml.data.cache import load_list
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.export import int8 as quantize
from bitmoji_ml.export.int8 import META_INT8_PARITY, accuracy_table, int8_table, quantize_beside
from bitmoji_ml.export.int8_gate import (
    MIN_AGREEMENT,
    SPEED_MARGIN,
    TIMING_ROUNDS,
    Int8Case,
    Int8Report,
    champion_decision,
    ms_per_image,
)
from bitmoji_ml.models import DEFAULT_MODEL, create_model
from bitmoji_ml.serving.onnx_model import OnnxModel


def report(
    same: tuple[int, ...] = (1000, 1084), fp32_ms: float | list = 0.2, int8_ms: float | list = 0.1
) -> Int8Report:
    cases = [
        Int8Case("validation images", 1000, same[0], 0.01, 0.001),
        Int8Case("test-folder images", 1084, same[1], 0.02, 0.002),
    ]
    rounds = [ms if isinstance(ms, list) else [ms] * TIMING_ROUNDS for ms in (fp32_ms, int8_ms)]
    return Int8Report(cases, *rounds)


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
    assert "is not 10% faster" in decision.reason


@pytest.mark.parametrize(
    ("fp32_ms", "int8_ms"), [(0.260, 0.245), (0.348, 0.319), (0.319, 0.296)]
)  # issue 22 item 5: int8 ahead by 6-8 %, within what the machine's load moves
def test_a_lead_under_the_margin_keeps_fp32(fp32_ms, int8_ms):
    assert SPEED_MARGIN == 0.10
    decision = champion_decision(report(fp32_ms=fp32_ms, int8_ms=int8_ms))
    assert not decision.int8
    assert f"int8 {int8_ms:.3f} vs fp32 {fp32_ms:.3f} ms/image" in decision.reason
    assert f"median of {TIMING_ROUNDS} rounds" in decision.reason
    assert f"int8 must take <= {fp32_ms * 0.9:.3f} (10% faster)" in decision.reason


def test_the_median_round_counts_not_the_luckiest():
    """One lucky int8 round (or one slow fp32 round) does not decide: the median does."""
    slow_fp32 = report(fp32_ms=[0.2] * 6 + [5.0], int8_ms=[0.19] * 7)
    assert not champion_decision(slow_fp32).int8
    lucky_int8 = report(fp32_ms=[0.2] * 7, int8_ms=[0.01] + [0.25] * 6)
    assert not champion_decision(lucky_int8).int8
    faster = champion_decision(report(fp32_ms=[0.2] * 7, int8_ms=[0.3] + [0.17] * 6))
    assert faster.int8 and "int8 0.170 vs fp32 0.200 ms/image" in faster.reason


def test_timing_rounds_interleave_and_flip_the_order():
    calls: list[str] = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def predict(self, images):
            calls.append(f"warm {self.name}")

        def predict_batched(self, images, batch):
            calls.append(self.name)

    times = ms_per_image({"fp32": Fake("fp32"), "int8": Fake("int8")}, np.zeros((4, 2, 2, 3), np.uint8))
    assert calls[:2] == ["warm fp32", "warm int8"]
    assert calls[2:8] == ["fp32", "int8", "int8", "fp32", "fp32", "int8"]
    assert [len(times["fp32"]), len(times["int8"])] == [TIMING_ROUNDS, TIMING_ROUNDS] == [7, 7]


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


def test_report_is_written_stored_in_the_model_and_shown(fp32_copy: Path, tiny_lists: Path):
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
    shown = int8_table(result.report) + accuracy_table(result, fp32_copy)
    assert "p99 |Δ prob|" in shown and "test-folder images" in shown and "images/s" in shown


@pytest.mark.parametrize(
    ("same_share", "int8_faster", "champion"),
    [(1.0, True, "int8"), (1.0, False, "fp32"), (0.5, True, "fp32")],
)
def test_the_gate_decides_the_champion_file(
    fp32_copy: Path, tiny_lists: Path, monkeypatch, same_share, int8_faster, champion
):
    def timing(models, images):
        return {"fp32": [0.2] * 7, "int8": [0.1 if int8_faster else 0.3] * 7}

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


def test_int8_val_acc_is_its_own_and_absent_where_not_measured(fp32_copy: Path, tiny_lists: Path):
    """The int8 file's val_acc is measured on the validation list when that list is the one the
    checkpoint was validated on (same lists digest); else it has none: never fp32's copy."""
    from bitmoji_ml.export.graph import write_metadata

    untrained = quantize_with(fp32_copy, tiny_lists)  # a checkpoint without val_acc or digest
    assert "val_acc" not in OnnxModel.load(untrained.path).metadata
    assert untrained.val_acc is None
    assert 0 <= untrained.report.int8_val_acc <= 1  # measured, but on no comparable list

    digest = json.loads((tiny_lists / "manifest.json").read_text())["digest"]
    metadata = OnnxModel.load(fp32_copy).metadata
    write_metadata(fp32_copy, {**metadata, "val_acc": "0.123456", "data_digest": digest}, full_check=False)
    validated = quantize_with(fp32_copy, tiny_lists)
    int8_meta = OnnxModel.load(validated.path).metadata
    assert validated.val_acc == validated.report.int8_val_acc
    assert float(int8_meta["val_acc"]) == pytest.approx(validated.report.int8_val_acc, abs=1e-6)
    assert int8_meta["val_acc"] != "0.123456"
    stored = json.loads(int8_meta[META_INT8_PARITY])
    assert stored["int8_val_acc"] == validated.report.int8_val_acc
    assert stored["fp32_val_acc"] == validated.report.fp32_val_acc


def test_int8_probabilities_come_in_steps_of_1_255(fp32_copy: Path, tiny_lists: Path):
    """What the README says about int8 outputs: P(male) is a multiple of 1/255 (the QDQ
    graph's uint8 output scale)."""
    result = quantize_with(fp32_copy, tiny_lists)
    rng = np.random.default_rng(0)
    size = OnnxModel.load(fp32_copy).preprocess.size
    prob = OnnxModel.load(result.path).predict(rng.integers(0, 256, (32, size, size, 3), dtype=np.uint8))
    steps = prob.astype(np.float64) * 255
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
