"""The learning-curve figure: comparable losses, the best epoch marked, the top of accuracy visible."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from bitmoji_ml import plots


def history() -> list[dict[str, float]]:
    val_acc = [0.9, 0.985, 0.995, 0.9983, 0.9967, 1.0]
    return [
        {
            "epoch": epoch,
            "train_loss": 0.5 / epoch,
            "val_loss": 0.4 / epoch,
            "train_acc": 0.9 + 0.015 * epoch,
            "val_acc": accuracy,
        }
        for epoch, accuracy in enumerate(val_acc, start=1)
    ]


@pytest.fixture
def figure():
    made = plots.learning_curve_figure(history(), best_epoch=4)
    yield made
    plt.close(made)


def test_the_best_epoch_is_marked_on_both_panels(figure) -> None:
    for axis in figure.axes:
        marks = [line for line in axis.lines if list(line.get_xdata()) == [4, 4]]
        assert len(marks) == 1, axis.get_title()
        assert "best epoch 4" in [text.get_text() for text in axis.get_legend().get_texts()]


def test_the_loss_panel_plots_the_plain_train_and_val_losses(figure) -> None:
    loss_axis = figure.axes[0]
    curves = {line.get_label(): list(line.get_ydata()) for line in loss_axis.lines}
    assert curves["train"] == [row["train_loss"] for row in history()]
    assert curves["val"] == [row["val_loss"] for row in history()]
    assert "no label smoothing" in loss_axis.get_ylabel()


def test_accuracy_axis_spreads_out_the_99_to_100_percent_region(figure) -> None:
    axis = figure.axes[1]
    assert axis.get_yscale() == "logit"
    # On screen, 99 % -> 99.9 % is about as tall as 90 % -> 99 % (on a linear axis: 1/10).
    to_pixels = axis.transData.transform
    y90, y99, y999 = (to_pixels((1, value))[1] for value in (0.9, 0.99, 0.999))
    assert y999 - y99 == pytest.approx(y99 - y90, rel=0.05)
    # 100 % is drawn (at the ceiling), not dropped.
    val = next(line for line in axis.lines if line.get_label() == "val")
    assert list(val.get_ydata())[-1] == plots.ACCURACY_CEILING


def test_learning_curves_writes_a_png(tmp_path: Path) -> None:
    path = plots.learning_curves(history(), tmp_path / "curves.png", best_epoch=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
