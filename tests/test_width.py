"""The `width` setting: the default model family scales its channels, models of one size refuse
other widths, and a checkpoint rebuilds the width it was trained at."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitmoji_ml.checkpoints import model_from_checkpoint, read_checkpoint, save_checkpoint
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import count_parameters, create_model, model_spec
from bitmoji_ml.recipe import Recipe, resolve_recipe
from bitmoji_ml.training.settings import default_run_name


def test_width_scales_the_compact_model() -> None:
    assert count_parameters(create_model("compact")) == 245_650  # width 1: the registered model
    half = count_parameters(create_model("compact", width=0.5))
    assert 0.2 < half / 245_650 < 0.3  # parameters grow with the square of the width
    assert model_spec("compact").scalable and not model_spec("seed-cnn").scalable


@pytest.mark.parametrize("name", ["seed-cnn", "resnet18"])
def test_models_of_one_size_refuse_another_width(name: str) -> None:
    with pytest.raises(BitmojiError, match="one size only"):
        create_model(name, width=0.5)


def test_a_checkpoint_rebuilds_its_width(tmp_path: Path) -> None:
    model = create_model("compact", width=0.75)
    preprocess = model_spec("compact").preprocess.to_dict()
    save_checkpoint(tmp_path / "w.pt", model, model="compact", preprocess=preprocess, config={"width": 0.75})
    rebuilt, _ = model_from_checkpoint(read_checkpoint(tmp_path / "w.pt"))
    assert count_parameters(rebuilt) == count_parameters(model)
    save_checkpoint(tmp_path / "old.pt", create_model("compact"), model="compact", preprocess=preprocess)
    old, _ = model_from_checkpoint(read_checkpoint(tmp_path / "old.pt"))  # written before widths
    assert count_parameters(old) == 245_650


def test_width_in_config_and_run_name() -> None:
    with pytest.raises(BitmojiError, match="width must be positive"):
        resolve_recipe(overrides={"width": 0})
    assert default_run_name(Recipe(width=0.75)).startswith(f"{Recipe().model}-w0.75-")
    assert "-w" not in default_run_name(Recipe())
    assert default_run_name(Recipe(all_labelled=True)).endswith("-all")
