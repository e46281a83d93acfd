"""The ensemble champion policy: the protocol's verdict lets an ensemble become @champion only
when it applies (same recipe, folds, data) and shows it no worse in errors, better in log loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.export.verdict import FORMAT, champion_rule, read_verdict

RECIPE = {"model": "hybrid", "epochs": 20, "lr": 0.002, "seed": 0, "threads": 1}
COST = {
    "single": {"images_per_second": 800.0, "cpu_ms_per_image": 0.5},
    "ensemble": {"images_per_second": 200.0, "cpu_ms_per_image": 2.5},
}


def write(folder: Path, *, single=(2.0, 0.060), ensemble=(1.67, 0.040), **changes) -> Path:
    data = {
        "format": FORMAT,
        "recipe": RECIPE,
        "folds": 5,
        "seeds": [0, 1, 2],
        "csv_sha256": "abc",
        "means": {
            "single": {"errors": single[0], "log_loss": single[1]},
            "ensemble": {"errors": ensemble[0], "log_loss": ensemble[1]},
        },
        "cost": COST,
        **changes,
    }
    path = folder / "verdict.json"
    path.write_text(json.dumps(data))
    return path


def rule(path: Path, **changes):
    facts = {"recipe": {**RECIPE, "seed": 3, "threads": 2}, "folds": 5, "csv_sha256": "abc", **changes}
    return champion_rule(read_verdict(path), **facts)


def test_a_better_ensemble_of_the_same_recipe_may_become_champion(tmp_path: Path):
    reason, lines = rule(write(tmp_path))
    assert reason == ""
    assert lines[0].startswith("protocol verdict: better") and "1.67 vs 2.00" in lines[0]
    assert "200 images/s vs single 800 (4.0x slower)" in lines[1]


@pytest.mark.parametrize(
    ("single", "ensemble"),
    [((2.0, 0.060), (2.33, 0.040)), ((2.0, 0.060), (2.0, 0.060)), ((2.0, 0.060), (1.0, 0.070))],
    ids=["more-errors", "same-log-loss", "worse-log-loss"],
)
def test_an_ensemble_not_better_needs_promote(tmp_path: Path, single, ensemble):
    reason, lines = rule(write(tmp_path, single=single, ensemble=ensemble))
    assert "not better" in reason and lines[0].startswith("protocol verdict: not better")


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"recipe": {**RECIPE, "lr": 0.01}}, "another recipe: lr=0.01"),
        ({"folds": 10}, "5-fold ensembles, this one has 10"),
        ({"csv_sha256": "other"}, "other labelled data"),
        ({"csv_sha256": None}, "other labelled data"),
    ],
)
def test_a_verdict_about_something_else_does_not_apply(tmp_path: Path, changes, why):
    reason, lines = rule(write(tmp_path), **changes)
    assert "does not apply" in reason and why in reason and why in lines[0]


def test_no_verdict_says_how_to_get_one():
    reason, lines = champion_rule(None, recipe=RECIPE, folds=5, csv_sha256="abc")
    assert "ensemble_protocol.py" in reason and lines[0].startswith("no protocol verdict")


@pytest.mark.parametrize("content", ["{", json.dumps({"format": "other"}), json.dumps({"format": FORMAT})])
def test_an_unreadable_verdict_is_a_clear_error(tmp_path: Path, content: str):
    path = tmp_path / "verdict.json"
    path.write_text(content)
    with pytest.raises(BitmojiError, match=str(path)):
        read_verdict(path)
    with pytest.raises(BitmojiError, match="not found"):
        read_verdict(tmp_path / "missing.json")


def test_verdict_applies_to_cv_run_exports_only(tmp_path: Path):
    from typer.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.app, ["export-onnx", "--verdict", str(write(tmp_path))])
    assert result.exit_code == 1 and "--verdict applies to --cv-run" in result.output
