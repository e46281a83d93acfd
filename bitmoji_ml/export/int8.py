"""int8 quantisation of an exported fp32 model, held to its own parity report against fp32.

The int8 file is compared with the fp32 file on the validation images and the test-folder
images (class agreement, max and p99 over images of the largest |delta P(class)|), scored on
the validation labels and timed against fp32 on this machine; `int8_gate` decides whether it
becomes champion. The report is printed, written beside the int8 file and stored in its
metadata.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
from pathlib import Path

import numpy as np

from bitmoji_ml.data.cache import decode_all
from bitmoji_ml.data.classes import predicted_indices
from bitmoji_ml.data.lists import LIST_FILES, read_list, read_manifest
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.export.graph import write_metadata
from bitmoji_ml.export.int8_gate import (
    ChampionDecision,
    Int8Case,
    Int8Report,
    champion_decision,
    ms_per_image,
)
from bitmoji_ml.files import atomic_paths
from bitmoji_ml.report import format_table
from bitmoji_ml.serving.onnx_model import INPUT_NAME, OnnxModel

CALIBRATION_IMAGES = 512  # training images the activation ranges are calibrated on
META_INT8_PARITY = "bitmoji.int8_parity"  # JSON of Int8Report.to_dict() in the int8 file
QUANTIZATION = "int8 static QDQ, per-channel weights, percentile calibration"
# `bitmoji predict` runs one single-thread onnxruntime pass per worker thread (inference.py's
# predict_paths), so a single-thread session measures the cost that decides its speed.
TIMING_THREADS = 1


@dataclasses.dataclass(frozen=True)
class Int8Result:
    """What quantising beside an fp32 file produced."""

    path: Path
    report_path: Path
    report: Int8Report
    decision: ChampionDecision
    champion: Path  # the int8 file or the fp32 one, per `decision`
    val_acc: float | None  # the int8 file's own, when the validation list is the checkpoint's


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
    """Class agreement and, per image, the largest |delta P(class)| of int8 against fp32 on each
    named image set (with two classes: |delta P(male)|)."""
    cases = []
    for name, images in image_sets.items():
        reference, quantized = fp32.predict_batched(images, 256), int8.predict_batched(images, 256)
        delta = np.abs(reference - quantized).max(axis=1)
        same = int((predicted_indices(reference) == predicted_indices(quantized)).sum())
        cases.append(Int8Case(name, len(images), same, float(delta.max()), float(np.percentile(delta, 99))))
    return cases


def accuracy(model: OnnxModel, images: np.ndarray, labels: np.ndarray) -> float:
    return float((predicted_indices(model.predict_batched(images, 256)) == labels).mean())


def int8_table(report: Int8Report) -> str:
    """The int8 parity report as a short table, then the timing the decision rests on."""
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
    speed = (
        f"inference: fp32 {report.fp32_ms_per_image:.3f} ms/image, int8 {report.int8_ms_per_image:.3f} "
        f"(median of {len(report.fp32_ms_rounds)} interleaved rounds, {TIMING_THREADS} thread); "
        f"int8 champion needs <= {report.int8_ms_needed:.3f} ({report.speed_margin:.0%} faster)"
    )
    return f"{table}\n{speed}"


def accuracy_table(result: Int8Result, fp32_path: Path) -> str:
    """Both files' validation accuracy, speed and size."""
    report, rows = result.report, []
    for name, acc, ms, path in (
        ("fp32", report.fp32_val_acc, report.fp32_ms_per_image, fp32_path),
        ("int8", report.int8_val_acc, report.int8_ms_per_image, result.path),
    ):
        shown = "-" if acc is None else f"{acc:.2%}"
        rows.append([name, shown, f"{1000 / ms:,.0f}", f"{path.stat().st_size / 1024:.0f} KiB"])
    return format_table(["model", "val acc", "images/s", "size"], rows)


def parity_images(lists_dir: Path, preprocess, validation: np.ndarray) -> dict[str, np.ndarray]:
    """Validation images, and the test-folder images of `prepare`'s test list when present."""
    sets = {"validation images": validation}
    test_list = Path(lists_dir) / LIST_FILES["test"]
    if test_list.is_file():
        paths = [path for path, _ in read_list(test_list, labelled=False)]
        sets["test-folder images"] = decode_all(paths, preprocess)
    return sets


def own_val_acc(fp32_metadata: dict[str, str], lists_dir: Path, measured: float) -> float | None:
    """The int8 file's val_acc: `measured` on the validation list when that list is the one the
    checkpoint's val_acc was measured on (same lists digest); None otherwise (a run without
    validation, or lists changed since: the images may be training images)."""
    fp32_val_acc = float(fp32_metadata.get("val_acc") or "nan")
    try:
        digest = read_manifest(lists_dir).get("digest", "")
    except BitmojiError:
        return None
    same_lists = bool(digest) and digest == fp32_metadata.get("data_digest")
    return measured if same_lists and not math.isnan(fp32_val_acc) else None


def int8_metadata(fp32_metadata: dict[str, str], stored_report: str, val_acc: float | None) -> dict[str, str]:
    """fp32's metadata with the int8 file's own val_acc (dropped when not measured)."""
    metadata = {key: value for key, value in fp32_metadata.items() if key != "val_acc"}
    if val_acc is not None:
        metadata["val_acc"] = f"{val_acc:.6f}"
    return {**metadata, "quantization": QUANTIZATION, META_INT8_PARITY: stored_report}


def int8_paths(fp32_path: Path) -> tuple[Path, Path]:
    """The int8 file and its parity report beside `fp32_path`."""
    return (
        fp32_path.with_name(fp32_path.stem + ".int8.onnx"),
        fp32_path.with_name(fp32_path.stem + ".int8.parity.json"),
    )


def quantize_beside(
    *, fp32_path: Path, lists_dir: Path | None, validation: tuple[np.ndarray, np.ndarray] | None
) -> Int8Result:
    """Write `<name>.int8.onnx` and `<name>.int8.parity.json` beside `fp32_path` and decide
    which file is champion (`int8_table` and `accuracy_table` show the result)."""
    if validation is None or lists_dir is None:
        raise BitmojiError("--quantize int8 needs the validation list to judge it: run `bitmoji prepare`")
    fp32 = OnnxModel.load(fp32_path, TIMING_THREADS)
    entries = read_list(Path(lists_dir) / LIST_FILES["train"])[:CALIBRATION_IMAGES]
    calibration = decode_all([path for path, _ in entries], fp32.preprocess)
    int8_path, report_path = int8_paths(fp32_path)
    images, labels = validation
    # The int8 file and its report are renamed into place together.
    with atomic_paths([int8_path, report_path]) as (tmp, report_tmp):
        quantize_int8(fp32_path, tmp, calibration)
        int8 = OnnxModel.load(tmp, TIMING_THREADS)
        cases = compare_int8(fp32, int8, parity_images(lists_dir, fp32.preprocess, images))
        timing = ms_per_image({"fp32": fp32, "int8": int8}, images)
        fp32_acc, int8_acc = accuracy(fp32, images, labels), accuracy(int8, images, labels)
        report = Int8Report(cases, timing["fp32"], timing["int8"], fp32_acc, int8_acc)
        decision = champion_decision(report)
        stored = json.dumps({**report.to_dict(), "int8_champion": decision.int8, "reason": decision.reason})
        val_acc = own_val_acc(fp32.metadata, lists_dir, int8_acc)
        write_metadata(tmp, int8_metadata(fp32.metadata, stored, val_acc), full_check=False)
        report_tmp.write_text(json.dumps(json.loads(stored), indent=2) + "\n", encoding="utf-8")
    champion = int8_path if decision.int8 else fp32_path
    return Int8Result(int8_path, report_path, report, decision, champion, val_acc)
