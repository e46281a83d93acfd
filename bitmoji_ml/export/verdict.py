"""The champion policy for an ensemble (issue 19): `export-onnx --cv-run ID --verdict FILE`
moves @champion to the ensemble only when FILE, the verdict.json of
`benchmarks/ensemble_protocol.py`, shows for the same recipe, fold count and labelled data that
the ensemble makes no more errors on the val list than single models and has a lower log loss
(means over the protocol's seeds). Without a verdict, or with one that does not apply or says
no, the ensemble is registered but @champion moves only with --promote. Either way the export
prints the verdict and the protocol's predict cost (ensemble vs single).

An ensemble has no held-out score of its own (its members trained on every labelled image between
them), so the protocol, where no member trained on a scored image, is the only fair comparison.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bitmoji_ml.errors import BitmojiError

FORMAT = "bitmoji-ensemble-protocol/1"
# Settings that do not change what a model learns (or differ by design between the protocol's
# runs and the cv run: its seed).
NOT_COMPARED = frozenset({"seed", "device", "threads", "disk_cache", "all_labelled", "sync_batchnorm"})


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the protocol measured: per row (single, ensemble, student) the mean val errors and
    log loss over `seeds`, and the predict cost of seed 0's models."""

    source: Path
    recipe: dict[str, Any]
    folds: int
    seeds: list[int]
    csv_sha256: str
    means: dict[str, dict[str, float]]
    cost: dict[str, dict[str, float]]

    def ensemble_wins(self) -> bool:
        single, ensemble = self.means["single"], self.means["ensemble"]
        return ensemble["errors"] <= single["errors"] and ensemble["log_loss"] < single["log_loss"]

    def measured(self) -> str:
        single, ensemble = self.means["single"], self.means["ensemble"]
        return (
            f"val errors {ensemble['errors']:.2f} vs {single['errors']:.2f}, log loss "
            f"{ensemble['log_loss']:.4f} vs {single['log_loss']:.4f} (ensemble vs single, mean of seeds "
            f"{','.join(map(str, self.seeds))}, {self.source})"
        )

    def cost_line(self) -> str:
        """The protocol's predict cost, ensemble vs single ('' if it did not measure it)."""
        single, ensemble = self.cost.get("single"), self.cost.get("ensemble")
        if not single or not ensemble:
            return ""
        return (
            f"predict cost (protocol): ensemble {ensemble['images_per_second']:.0f} images/s vs single "
            f"{single['images_per_second']:.0f} ({single['images_per_second'] / ensemble['images_per_second']:.1f}x "
            f"slower); network CPU {ensemble['cpu_ms_per_image']:.3f} vs {single['cpu_ms_per_image']:.3f} ms/image"
        )


def read_verdict(path: Path) -> Verdict:
    """The protocol's verdict.json, or a clear error naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise BitmojiError(
                f"{path} is not a verdict of benchmarks/ensemble_protocol.py (format {FORMAT})"
            )
        means = data["means"]
        for row in ("single", "ensemble"):
            float(means[row]["errors"]), float(means[row]["log_loss"])
        return Verdict(
            path,
            dict(data["recipe"]),
            int(data["folds"]),
            list(data["seeds"]),
            str(data["csv_sha256"]),
            means,
            data.get("cost", {}),
        )
    except FileNotFoundError as error:
        raise BitmojiError(f"verdict file {path} not found") from error
    except (
        OSError,
        UnicodeDecodeError,
        json.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as error:
        raise BitmojiError(
            f"verdict file {path} is not readable ({error!r}): run benchmarks/ensemble_protocol.py"
        ) from error


def mismatch(verdict: Verdict, *, recipe: dict[str, Any], folds: int, csv_sha256: str | None) -> str:
    """Why `verdict` does not speak for this ensemble ('' when it does): another recipe, fold
    count or labelled data."""
    differ = sorted(
        key
        for key in set(verdict.recipe) & set(recipe)
        if key not in NOT_COMPARED and verdict.recipe[key] != recipe[key]
    )
    if differ:
        shown = ", ".join(f"{key}={recipe[key]!r} (verdict: {verdict.recipe[key]!r})" for key in differ)
        return f"it measured another recipe: {shown}"
    if folds != verdict.folds:
        return f"it measured {verdict.folds}-fold ensembles, this one has {folds} members"
    if csv_sha256 != verdict.csv_sha256:
        return "it measured other labelled data (train.csv sha256 differs, or the lists record none)"
    return ""


def champion_rule(
    verdict: Verdict | None, *, recipe: dict[str, Any], folds: int, csv_sha256: str | None
) -> tuple[str, list[str]]:
    """(why the ensemble may become @champion only with --promote, '' when the verdict lets it;
    the lines the export prints about the decision and the cost)."""
    if verdict is None:
        reason = (
            "an ensemble has no held-out val acc; run benchmarks/ensemble_protocol.py and pass its "
            "verdict.json with --verdict"
        )
        return reason, [f"no protocol verdict: {reason}"]
    lines = [verdict.cost_line()] if verdict.cost_line() else []
    wrong = mismatch(verdict, recipe=recipe, folds=folds, csv_sha256=csv_sha256)
    if wrong:
        return f"the verdict {verdict.source} does not apply: {wrong}", [
            f"protocol verdict does not apply: {wrong}",
            *lines,
        ]
    if not verdict.ensemble_wins():
        reason = f"the protocol found it not better than single models: {verdict.measured()}"
        return reason, [f"protocol verdict: not better, {verdict.measured()}", *lines]
    return "", [f"protocol verdict: better, {verdict.measured()}", *lines]
