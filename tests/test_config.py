"""Training configuration: defaults, presets, TOML files, overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import DEFAULT_MODEL, MODELS
from bitmoji_ml.recipe import PRESETS, Recipe, recipe_from_values, requested_values, resolve_recipe

# The MLflow param names: renaming one breaks comparisons with earlier runs.
PARAM_NAMES = [
    "model",
    "image_size",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "label_smoothing",
    "ema",
    "patience",
    "seed",
    "device",
    "threads",
    "flip",
    "shift",
    "scale",
    "jitter",
    "disk_cache",
    "width",
    "all_labelled",
    "teacher",
    "teacher_weight",
    "sync_batchnorm",
]


def write_toml(folder: Path, text: str) -> Path:
    path = folder / "train.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Defaults and presets


def test_defaults() -> None:
    config = Recipe()
    assert config.model == DEFAULT_MODEL
    assert config.model in MODELS
    assert config.image_size == 0
    assert config.epochs == 16
    assert config.batch_size == 64
    assert config.optimizer == "adamw"
    assert config.lr == 2e-3
    assert config.ema == 0.99
    assert config.schedule == "onecycle"
    assert config.device == "auto"
    assert config.flip is True
    assert config.disk_cache is False
    assert resolve_recipe().recipe == config
    assert recipe_from_values({}) == config


def test_seed_cnn_preset_is_the_published_baseline() -> None:
    config = resolve_recipe("seed-cnn").recipe
    assert config.model == "seed-cnn"
    assert config.optimizer == "sgd"
    assert config.lr == 1e-4
    assert config.momentum == 0.9
    assert config.batch_size == 4
    assert config.epochs == 10
    # No augmentation of any kind.
    assert config.flip is False
    assert config.shift == 0.0
    assert config.scale == 0.0
    assert config.jitter == 0.0


def test_resnet18_preset_selects_resnet18() -> None:
    assert resolve_recipe("resnet18").recipe.model == "resnet18"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_a_valid_config_for_a_registered_model(preset: str) -> None:
    config = resolve_recipe(preset).recipe
    assert config.model in MODELS
    for key, value in PRESETS[preset].items():
        assert getattr(config, key) == value
    # Fields the preset does not mention keep their defaults.
    defaults = Recipe()
    for name in Recipe.model_fields:
        if name not in PRESETS[preset]:
            assert getattr(config, name) == getattr(defaults, name)


def test_unknown_preset_is_refused_listing_presets() -> None:
    with pytest.raises(BitmojiError) as caught:
        resolve_recipe("fast")
    message = str(caught.value)
    assert "'fast'" in message
    for preset in PRESETS:
        assert preset in message


def test_build_config_does_not_modify_the_preset() -> None:
    before = dict(PRESETS["seed-cnn"])
    resolve_recipe("seed-cnn", overrides={"epochs": 2, "lr": 0.5})
    assert PRESETS["seed-cnn"] == before


# --------------------------------------------------------------------------------------------
# Precedence: defaults < preset < TOML file < overrides


def test_precedence_defaults_preset_file_overrides(tmp_path: Path) -> None:
    config_file = write_toml(tmp_path, "epochs = 3\nlr = 0.5\nseed = 7\n")
    config = resolve_recipe(
        "seed-cnn",
        config_file,
        overrides={"lr": 0.25, "batch_size": None, "seed": None, "patience": 2},
    ).recipe
    assert config.epochs == 3  # file beats preset (10)
    assert config.lr == 0.25  # override beats file (0.5) and preset (1e-4)
    assert config.seed == 7  # None override ignored: file value stays
    assert config.batch_size == 4  # None override ignored: preset value stays
    assert config.optimizer == "sgd"  # preset beats default
    assert config.patience == 2  # override beats default
    assert config.device == Recipe().device  # nobody set it: default


def test_file_alone_over_defaults(tmp_path: Path) -> None:
    config_file = write_toml(tmp_path, 'model = "resnet18"\nflip = false\nshift = 0.0\n')
    config = resolve_recipe(config_file=config_file).recipe
    assert config.model == "resnet18"
    assert config.flip is False
    assert config.shift == 0.0
    assert config.epochs == Recipe().epochs


def test_overrides_alone_over_preset() -> None:
    config = resolve_recipe("seed-cnn", overrides={"flip": True, "epochs": None}).recipe
    assert config.flip is True
    assert config.epochs == 10


def test_requested_values_hold_only_what_was_set(tmp_path: Path) -> None:
    # --resume compares these with the checkpoint: a default must not count as a request.
    assert requested_values() == {}
    assert requested_values(overrides={"epochs": 30, "lr": None}) == {"epochs": 30}
    config_file = write_toml(tmp_path, "seed = 7\nepochs = 3\n")
    values = requested_values("seed-cnn", config_file, {"epochs": 5})
    assert values == {**PRESETS["seed-cnn"], "seed": 7, "epochs": 5}
    assert resolve_recipe("seed-cnn", config_file, {"epochs": 5}).recipe == recipe_from_values(values)


def test_toml_integer_for_float_field_becomes_float(tmp_path: Path) -> None:
    config = resolve_recipe(config_file=write_toml(tmp_path, "lr = 1\nweight_decay = 0\n")).recipe
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert isinstance(config.weight_decay, float)


# --------------------------------------------------------------------------------------------
# Validation


def test_unknown_key_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BitmojiError, match="learning_rate"):
        recipe_from_values({"learning_rate": 0.1})
    with pytest.raises(BitmojiError, match="learning_rate"):
        resolve_recipe(overrides={"learning_rate": 0.1})
    # A TOML table is an unknown key too, not silently ignored.
    with pytest.raises(BitmojiError, match="train"):
        resolve_recipe(config_file=write_toml(tmp_path, "[train]\nepochs = 3\n"))


@pytest.mark.parametrize(
    "values",
    [
        {"epochs": "ten"},
        {"lr": "fast"},
        {"batch_size": [4]},
        {"shift": {"x": 1}},
        {"flip": "maybe"},
        {"disk_cache": "yes please"},
    ],
)
def test_bad_type_is_refused_naming_the_key(values: dict) -> None:
    (key,) = values
    with pytest.raises(BitmojiError, match=key):
        recipe_from_values(values)


def test_bad_type_in_toml_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BitmojiError, match="epochs"):
        resolve_recipe(config_file=write_toml(tmp_path, 'epochs = "many"\n'))


@pytest.mark.parametrize(
    ("key", "value"),
    [("optimizer", "adam"), ("schedule", "linear"), ("device", "tpu"), ("optimizer", "SGD")],
)
def test_bad_choice_is_refused_listing_choices(key: str, value: str) -> None:
    with pytest.raises(BitmojiError) as caught:
        recipe_from_values({key: value})
    message = str(caught.value)
    assert key in message and repr(value) in message
    assert {"optimizer": "adamw", "schedule": "onecycle", "device": "cpu"}[key] in message


@pytest.mark.parametrize(
    "values",
    [
        {"epochs": 0},
        {"epochs": -1},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": -0.1},
    ],
)
def test_non_positive_epochs_batch_or_lr_is_refused(values: dict) -> None:
    with pytest.raises(BitmojiError, match="positive"):
        recipe_from_values(values)


def test_smallest_positive_values_are_accepted() -> None:
    config = recipe_from_values({"epochs": 1, "batch_size": 1, "lr": 1e-9})
    assert (config.epochs, config.batch_size, config.lr) == (1, 1, 1e-9)


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BitmojiError, match="not found"):
        resolve_recipe(config_file=tmp_path / "absent.toml")


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BitmojiError, match="TOML"):
        resolve_recipe(config_file=write_toml(tmp_path, "epochs = = 3\n"))
    with pytest.raises(BitmojiError, match="TOML"):
        resolve_recipe(config_file=write_toml(tmp_path, "epochs: 3\n"))


# --------------------------------------------------------------------------------------------
# Strings from flags and environment


@pytest.mark.parametrize(
    ("text", "expected"), [("false", False), ("False", False), ("TRUE", True), ("true", True)]
)
def test_bool_from_string(text: str, expected: bool) -> None:
    config = recipe_from_values({"flip": text, "disk_cache": text})
    assert config.flip is expected
    assert config.disk_cache is expected


def test_bool_from_string_false_through_overrides() -> None:
    # bool("false") would be True; the string must be parsed, not cast.
    assert resolve_recipe(overrides={"flip": "false"}).recipe.flip is False


def test_numbers_from_strings() -> None:
    config = recipe_from_values({"epochs": "5", "lr": "0.01", "model": "seed-cnn"})
    assert config.epochs == 5 and isinstance(config.epochs, int)
    assert config.lr == 0.01 and isinstance(config.lr, float)


# --------------------------------------------------------------------------------------------
# MLflow params


def test_to_params_gives_every_field_as_a_string_with_stable_names() -> None:
    config = resolve_recipe("seed-cnn", overrides={"epochs": 3}).recipe
    params = config.to_params()
    assert list(params) == PARAM_NAMES
    assert list(Recipe.model_fields) == PARAM_NAMES
    assert all(isinstance(value, str) for value in params.values())
    assert params["model"] == "seed-cnn"
    assert params["epochs"] == "3"
    assert params["batch_size"] == "4"
    assert float(params["lr"]) == 1e-4
    assert params["flip"] == "False"
    assert params["optimizer"] == "sgd"


def test_to_params_round_trips_through_config_from_dict() -> None:
    config = resolve_recipe("seed-cnn", overrides={"epochs": 3, "jitter": 0.3}).recipe
    assert recipe_from_values(config.to_params()) == config
    assert recipe_from_values(config.values()) == config
