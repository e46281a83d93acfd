"""Whether the int8 file becomes champion: it must agree with fp32 on >= 99.9 % of every image
set AND be faster by a margin, timed over interleaved rounds.

One timing of each file is not enough to decide on: three exports of one checkpoint measured
fp32 vs int8 at 0.260 vs 0.245, 0.348 vs 0.296 and 0.319 vs 0.266 ms/image, so a 6 % lead is
within what the machine's load moves. The files are timed in alternating rounds (the order
flips every round, so neither always runs first after the other warmed the caches), each
file's time is the median of its rounds, and int8 must be at least SPEED_MARGIN faster.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import numpy as np

from bitmoji_ml.serving.onnx_model import OnnxModel

MIN_AGREEMENT = 0.999  # int8 must predict the fp32 class on at least this share of each image set
SPEED_MARGIN = 0.10  # int8 must take at most (1 - SPEED_MARGIN) x fp32's time per image
TIMING_ROUNDS = 7  # interleaved rounds per file; the median of them counts
TIMING_BATCH = 256


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
    """The int8 parity cases, both files' validation accuracy and their inference time per
    image on this machine (median of `ms_rounds`, one entry per round)."""

    cases: list[Int8Case]
    fp32_ms_rounds: list[float]
    int8_ms_rounds: list[float]
    fp32_val_acc: float | None = None  # on the validation list of the parity cases
    int8_val_acc: float | None = None
    min_agreement: float = MIN_AGREEMENT
    speed_margin: float = SPEED_MARGIN

    @property
    def fp32_ms_per_image(self) -> float:
        return statistics.median(self.fp32_ms_rounds)

    @property
    def int8_ms_per_image(self) -> float:
        return statistics.median(self.int8_ms_rounds)

    @property
    def int8_ms_needed(self) -> float:
        """The time per image int8 must not exceed to count as faster."""
        return self.fp32_ms_per_image * (1 - self.speed_margin)

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "cases": [{**dataclasses.asdict(c), "agreement": c.agreement} for c in self.cases],
            "fp32_ms_per_image": self.fp32_ms_per_image,
            "int8_ms_per_image": self.int8_ms_per_image,
        }


@dataclasses.dataclass(frozen=True)
class ChampionDecision:
    """Whether the int8 file should be champion, and why."""

    int8: bool
    reason: str


def champion_decision(report: Int8Report) -> ChampionDecision:
    """int8 is champion only if every case agrees on >= min_agreement and it is faster than
    fp32 by at least the speed margin; the reason gives both times and the bar."""
    worst = min(report.cases, key=lambda case: case.agreement)
    if worst.agreement < report.min_agreement:
        return ChampionDecision(
            False,
            f"int8 agrees with fp32 on {worst.agreement:.2%} of the {worst.case}, "
            f"under the {report.min_agreement:.1%} required",
        )
    times = (
        f"int8 {report.int8_ms_per_image:.3f} vs fp32 {report.fp32_ms_per_image:.3f} ms/image, "
        f"median of {len(report.int8_ms_rounds)} rounds; int8 must take <= {report.int8_ms_needed:.3f} "
        f"({report.speed_margin:.0%} faster)"
    )
    if report.int8_ms_per_image > report.int8_ms_needed:
        return ChampionDecision(
            False, f"int8 is not {report.speed_margin:.0%} faster on this machine: {times}"
        )
    return ChampionDecision(
        True,
        f"int8 agrees on >= {report.min_agreement:.1%} of every image set and is "
        f">= {report.speed_margin:.0%} faster: {times}",
    )


def ms_per_image(
    models: dict[str, OnnxModel], images: np.ndarray, rounds: int = TIMING_ROUNDS
) -> dict[str, list[float]]:
    """Inference milliseconds per image of each model in each of `rounds` rounds. The models
    take turns within a round and the order flips every round, so a busy moment on the machine
    or a warm cache does not favour one of them."""
    for model in models.values():
        model.predict(images[:64])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for _ in range(rounds):
        for name in order:
            started = time.perf_counter()
            models[name].predict_batched(images, TIMING_BATCH)
            times[name].append((time.perf_counter() - started) * 1000 / len(images))
        order.reverse()
    return times
