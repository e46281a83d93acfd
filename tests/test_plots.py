"""The learning-curve figure: comparable losses, the best epoch marked, the top of accuracy visible."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
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


# --- the evaluation figures of N classes (issue 18) -----------------------------------------------

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def test_a_ten_class_confusion_matrix_names_every_class_and_shows_every_count() -> None:
    matrix = np.arange(100).reshape(10, 10)
    made = plots.confusion_matrix_figure(matrix, "val", DIGITS)
    (axis,) = made.axes
    assert [label.get_text() for label in axis.get_xticklabels()] == list(DIGITS)
    assert [label.get_text() for label in axis.get_yticklabels()] == list(DIGITS)
    assert all(label.get_rotation() == 45 for label in axis.get_xticklabels())  # long names do not collide
    assert sorted(int(text.get_text()) for text in axis.texts) == list(range(100))
    # colour: the share of the true class's row, so each row spans the same scale
    shares = axis.images[0].get_array()
    assert np.allclose(shares.sum(axis=1), 1) and shares[9, 9] == pytest.approx(99 / sum(range(90, 100)))
    plt.close(made)


def test_two_class_histogram_is_p_of_class_one_by_true_class() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    made = plots.probability_figure(probabilities, np.array([0, 1, 1]), ("no", "yes"))
    (axis,) = made.axes
    assert axis.get_xlabel() == "P(yes)"
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["true no", "true yes"]
    plt.close(made)


def test_three_class_histograms_one_panel_per_true_class_of_its_probability() -> None:
    probabilities = np.array([[0.72, 0.18, 0.1], [0.28, 0.62, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    made = plots.probability_figure(probabilities, np.array([0, 0, 1, 1]), ("ant", "bee", "cat"))
    titles = [axis.get_title() for axis in made.axes if axis.get_visible() and axis.axison]
    assert titles == ["true ant (2, 1 wrong)", "true bee (2, 1 wrong)", "true cat (0, 0 wrong)"]
    ant, _, cat = made.axes
    assert ant.get_xlabel() == "P(true class)"
    # right over wrong: the ant at P(ant) 0.72 is right, the one at 0.28 (called bee) wrong
    right, wrong = ([p for p in ant.patches if p.get_facecolor()[:3] == colour] for colour in _colours())
    assert sum(bar.get_height() for bar in right) == 1 and sum(bar.get_height() for bar in wrong) == 1
    assert [bar.get_x() for bar in right if bar.get_height()] == [pytest.approx(0.7)]
    assert [text.get_text() for text in cat.texts] == ["no images"]
    plt.close(made)


def _colours() -> tuple[tuple[float, ...], tuple[float, ...]]:
    from matplotlib.colors import to_rgb

    return to_rgb(plots.RIGHT_COLOUR), to_rgb(plots.WRONG_COLOUR)


def test_ten_class_histograms_fit_in_two_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    probabilities = rng.dirichlet(np.ones(10), 200)
    made = plots.probability_figure(probabilities, labels, DIGITS)
    assert len(made.axes) == 10 and made.get_size_inches()[1] < 6
    plt.close(made)


def test_a_confusion_matrix_without_names_is_bitmoji_for_two_classes_else_indices() -> None:
    two = plots.confusion_matrix_figure(np.array([[3, 1], [0, 4]]), "val")
    assert [label.get_text() for label in two.axes[0].get_yticklabels()] == ["female", "male"]
    three = plots.confusion_matrix_figure(np.eye(3, dtype=int), "val")
    assert [label.get_text() for label in three.axes[0].get_xticklabels()] == ["0", "1", "2"]
    with pytest.raises(ValueError, match=r"shape \(3, 3\) for 2 class names"):
        plots.confusion_matrix_figure(np.eye(3, dtype=int), "val", ("a", "b"))
    plt.close("all")
