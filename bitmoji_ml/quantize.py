"""int8 quantisation of an exported fp32 model, held to its own parity report against fp32.

The int8 file is compared with the fp32 file on the validation images and the test-folder
images (class agreement, max and p99 |delta P(male)|) and timed against it on this machine; it
becomes champion only when it agrees on >= 99.9 % of every image set AND is faster. The report is
printed, written beside the int8 file and stored in its metadata.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bitmoji_ml.data.cache import decode_all
from bitmoji_ml.data.labels import predicted_classes
from bitmoji_ml.data.lists import LIST_FILES, read_list
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import atomic_paths
from bitmoji_ml.report import format_table
from bitmoji_ml.serving.onnx_model import INPUT_NAME, OnnxModel

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.999  # int8 must predict the fp32 class on at least this share of each image set
CALIBRATION_IMAGES = 512  # training images the activation ranges are calibrated on
META_INT8_PARITY = "bitmoji.int8_parity"  # JSON of Int8Report.to_dict() in the int8 file
TIMING_ROUNDS = 5


@dataclasses.dataclass(frozen=True)
class Int8Case:
    """int8 vs fp32 on one set of images."""

    case: str
    images: int
    same_class: int
    max_abs_diff_prob: float
    p99_abs_diff_prob: float

    @property
    def agreement(self) -> float:
        return self.same_class / self.images if self.images else 1.0


@dataclasses.dataclass(frozen=True)
class Int8Report:
    """The int8 parity cases and both files' inference time per image on this machine."""

    cases: list[Int8Case]
    fp32_ms_per_image: float
    int8_ms_per_image: float
    min_agreement: float = MIN_AGREEMENT

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "cases": [{**dataclasses.asdict(c), "agreement": c.agreement} for c in self.cases],
        }


@dataclasses.dataclass(frozen=True)
class ChampionDecision:
    """Whether the int8 file should be champion, and why."""

    int8: bool
    reason: str


@dataclasses.dataclass(frozen=True)
class Int8Result:
    """What quantising beside an fp32 file produced."""

    path: Path
    report_path: Path
    report: Int8Report
    decision: ChampionDecision
    champion: Path  # the int8 file or the fp32 one, per `decision`

    def summary(self) -> dict[str, Any]:
        """Plain values for the export job's result."""
        return {
            "output": str(self.path),
            "report": str(self.report_path),
            "int8_champion": self.decision.int8,
            "reason": self.decision.reason,
        }


def champion_decision(report: Int8Report) -> ChampionDecision:
    """int8 is champion only if every case agrees on >= min_agreement and it is faster."""
    worst = min(report.cases, key=lambda case: case.agreement)
    if worst.agreement < report.min_agreement:
        return ChampionDecision(
            False,
            f"int8 agrees with fp32 on {worst.agreement:.2%} of the {worst.case}, "
            f"under the {report.min_agreement:.1%} required",
        )
    if report.int8_ms_per_image >= report.fp32_ms_per_image:
        return ChampionDecision(
            False,
            f"int8 is not faster on this machine ({report.int8_ms_per_image:.3f} vs "
            f"{report.fp32_ms_per_image:.3f} ms/image)",
        )
    return ChampionDecision(
        True, f"int8 agrees on >= {report.min_agreement:.1%} of every image set and is faster"
    )


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> None:
    """Static int8 quantisation (QDQ, per-channel weights), activation ranges calibrated on
    training images by percentile, which ignores the rare extreme activations min-max stretches
    the ranges to (on a trial 64 px model min-max flipped 2 of the 1,084 test-folder faces,
    percentile none; on `separable` both none, percentile with the smaller p99 |delta|), after
    onnxruntime's recommended shape inference and graph optimisation pass."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [{INPUT_NAME: calibration[i : i + 32]} for i in range(0, len(calibration), 32)]
            )

        def get_next(self):
            return next(self.batches, None)

    prepared = out_path.with_name(out_path.name + ".prep.onnx")
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs advice on the root logger
    try:  # the percentile calibrator also prints its progress: keep it off our output
        quant_pre_process(str(fp32_path), str(prepared))
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared),
                str(out_path),
                Reader(),
                quant_format=QuantFormat.QDQ,
                calibrate_method=CalibrationMethod.Percentile,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    finally:
        logging.getLogger().setLevel(level)
        prepared.unlink(missing_ok=True)


def compare_int8(fp32: OnnxModel, int8: OnnxModel, image_sets: dict[str, np.ndarray]) -> list[Int8Case]:
    """Class agreement and |delta P(male)| of int8 against fp32 on each named image set."""
    cases = []
    for name, images in image_sets.items():
        reference, quantized = fp32.predict_batched(images, 256), int8.predict_batched(images, 256)
        delta = np.abs(reference - quantized)
        same = int((predicted_classes(reference) == predicted_classes(quantized)).sum())
        cases.append(Int8Case(name, len(images), same, float(delta.max()), float(np.percentile(delta, 99))))
    return cases


def ms_per_image(models: dict[str, OnnxModel], images: np.ndarray) -> dict[str, float]:
    """Inference milliseconds per image of each model, best of alternating rounds (so a busy
    moment on the machine does not favour one of them)."""
    best = dict.fromkeys(models, float("inf"))
    for model in models.values():
        model.predict(images[:64])  # warm-up
    for _ in range(TIMING_ROUNDS):
        for name, model in models.items():
            started = time.perf_counter()
            model.predict_batched(images, 256)
            best[name] = min(best[name], (time.perf_counter() - started) * 1000 / len(images))
    return best


def int8_table(report: Int8Report) -> str:
    """The int8 parity report as a short table."""
    rows = [
        [
            c.case,
            c.images,
            f"{c.same_class}/{c.images} ({c.agreement:.2%})",
            f"{c.max_abs_diff_prob:.2e}",
            f"{c.p99_abs_diff_prob:.2e}",
        ]
        for c in report.cases
    ]
    table = format_table(["int8 vs fp32", "images", "same class", "max |Δ prob|", "p99 |Δ prob|"], rows)
    speed = f"inference: fp32 {report.fp32_ms_per_image:.3f} ms/image, int8 {report.int8_ms_per_image:.3f}"
    return f"{table}\n{speed}"


def parity_images(lists_dir: Path, preprocess, validation: np.ndarray) -> dict[str, np.ndarray]:
    """Validation images, and the test-folder images of `prepare`'s test list when present."""
    sets = {"validation images": validation}
    test_list = Path(lists_dir) / LIST_FILES["test"]
    if test_list.is_file():
        paths = [path for path, _ in read_list(test_list, labelled=False)]
        sets["test-folder images"] = decode_all(paths, preprocess)
    return sets


def quantize_beside(
    *, fp32_path: Path, lists_dir: Path | None, validation: tuple[np.ndarray, np.ndarray] | None
) -> Int8Result:
    """Write `<name>.int8.onnx` and `<name>.int8.parity.json` beside `fp32_path`, print the
    parity report and accuracy/speed table, and decide which file is champion."""
    if validation is None or lists_dir is None:
        raise BitmojiError("--quantize int8 needs the validation list to judge it: run `bitmoji prepare`")
    threads = max(1, (os.cpu_count() or 1) // 2)  # as `bitmoji predict` runs it
    fp32 = OnnxModel.load(fp32_path, threads)
    entries = read_list(Path(lists_dir) / LIST_FILES["train"])[:CALIBRATION_IMAGES]
    calibration = decode_all([path for path, _ in entries], fp32.preprocess)
    int8_path = fp32_path.with_name(fp32_path.stem + ".int8.onnx")
    report_path = fp32_path.with_name(fp32_path.stem + ".int8.parity.json")
    # The int8 file and its report are renamed into place together.
    with atomic_paths([int8_path, report_path]) as (tmp, report_tmp):
        quantize_int8(fp32_path, tmp, calibration)
        int8 = OnnxModel.load(tmp, threads)
        cases = compare_int8(fp32, int8, parity_images(lists_dir, fp32.preprocess, validation[0]))
        timing = ms_per_image({"fp32": fp32, "int8": int8}, validation[0])
        report = Int8Report(cases, timing["fp32"], timing["int8"])
        decision = champion_decision(report)
        stored = json.dumps({**report.to_dict(), "int8_champion": decision.int8, "reason": decision.reason})
        quantization = "int8 static QDQ, per-channel weights, percentile calibration"
        _write_metadata(tmp, {**fp32.metadata, "quantization": quantization, META_INT8_PARITY: stored})
        report_tmp.write_text(json.dumps(json.loads(stored), indent=2) + "\n", encoding="utf-8")
    log.info(int8_table(report))
    _log_accuracy(fp32, OnnxModel.load(int8_path, threads), validation, timing)
    log.info(f"champion: {'int8' if decision.int8 else 'fp32'} ({decision.reason})")
    champion = int8_path if decision.int8 else fp32_path
    return Int8Result(int8_path, report_path, report, decision, champion)


def _log_accuracy(fp32: OnnxModel, int8: OnnxModel, validation, timing: dict[str, float]) -> None:
    images, labels = validation
    rows = []
    for name, model in (("fp32", fp32), ("int8", int8)):
        accuracy = float((predicted_classes(model.predict_batched(images, 256)) == labels).mean())
        size = f"{model.path.stat().st_size / 1024:.0f} KiB"
        rows.append([name, f"{accuracy:.2%}", f"{1000 / timing[name]:,.0f}", size])
    log.info(format_table(["model", "val acc", "images/s", "size"], rows))


def _write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the metadata_props of the ONNX file at `path`."""
    import onnx

    from bitmoji_ml.export import replace_metadata_props  # export imports this module

    model = onnx.load(str(path))
    replace_metadata_props(model, metadata)
    onnx.save(model, str(path))
