"""Checkpoint files: round trip, atomic writes, safe loading and rebuilding the model."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from bitmoji_ml.checkpoints import (
    FORMAT_VERSION,
    TRAIN_STATE,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
    train_state_of,
)
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import MODELS, create_model
from bitmoji_ml.models.normalize import Classifier

PREPROCESS = Preprocess(size=32, resize=36, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)


def trained_like_model(seed: int = 0) -> Classifier:
    """A compact model whose weights AND BatchNorm running statistics differ from a fresh one,
    so a checkpoint that dropped either would give different outputs."""
    torch.manual_seed(seed)
    model = create_model("compact", PREPROCESS)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
        model.train()
        for step in range(3):
            model(images(8, seed=100 + step))  # updates running_mean / running_var
    return model.eval()


def fields(**extra) -> dict:
    return {
        "model": "compact",
        "preprocess": PREPROCESS.to_dict(),
        "config": {"model": "compact", "epochs": 3, "lr": 0.003, "flip": True},
        "metrics": {"epoch": 2, "val_acc": 0.75, "val_loss": 0.5},
        "epoch": 2,
        "data_digest": "abc123",
        **extra,
    }


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Classifier]:
    model = trained_like_model()
    path = tmp_path / "best.pt"
    save_checkpoint(path, model, **fields())
    return path, model


# --------------------------------------------------------------------------------------------
# Round trip and atomic writes


def test_round_trip_keeps_weights_and_fields(saved: tuple[Path, Classifier]) -> None:
    path, model = saved
    payload = read_checkpoint(path)
    assert payload["format"] == FORMAT_VERSION
    state = model.state_dict()
    assert set(payload["state_dict"]) == set(state)
    for key, tensor in state.items():
        assert torch.equal(payload["state_dict"][key], tensor), key
    for key, value in fields().items():
        assert payload[key] == value, key
    # BatchNorm running statistics and the normalisation buffers travel too.
    assert any(key.endswith("running_mean") for key in payload["state_dict"])
    assert "normalize.mean" in payload["state_dict"]


def test_round_trip_keeps_tensor_fields(tmp_path: Path) -> None:
    generator_state = torch.Generator().manual_seed(3).get_state()
    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.625}]
    path = tmp_path / "last.pt"
    save_checkpoint(path, create_model("compact"), **fields(generator=generator_state, history=history))
    payload = read_checkpoint(path)
    assert torch.equal(payload["generator"], generator_state)
    assert payload["history"] == history


def test_read_accepts_str_paths(saved: tuple[Path, Classifier]) -> None:
    path, _ = saved
    assert read_checkpoint(str(path))["model"] == "compact"


def test_save_leaves_only_the_checkpoint_in_the_folder(tmp_path: Path) -> None:
    model = create_model("compact")
    save_checkpoint(tmp_path / "a.pt", model, **fields())
    save_checkpoint(tmp_path / "a.pt", model, **fields(epoch=3))  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["a.pt"]
    assert read_checkpoint(tmp_path / "a.pt")["epoch"] == 3


def test_save_creates_missing_folders(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "c.pt"
    save_checkpoint(path, create_model("compact"), **fields())
    assert read_checkpoint(path)["model"] == "compact"
    assert os.listdir(path.parent) == ["c.pt"]


def test_failed_save_keeps_the_old_file_and_leaves_no_temp_file(
    saved: tuple[Path, Classifier],
) -> None:
    path, _ = saved
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(path, create_model("compact"), **fields(callback=lambda: None))
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]


# --------------------------------------------------------------------------------------------
# Refusals


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BitmojiError, match="not found"):
        read_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(BitmojiError, match="not found"):
        read_checkpoint(tmp_path)  # a folder is not a checkpoint file


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(2048))
    with pytest.raises(BitmojiError, match="not a bitmoji checkpoint"):
        read_checkpoint(path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(BitmojiError, match="not a bitmoji checkpoint"):
        read_checkpoint(path)


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(create_model("compact"), path)  # a whole pickled nn.Module, not weights
    # The file really is loadable by unsafe unpickling: the refusal comes from weights_only.
    assert isinstance(torch.load(path, weights_only=False), Classifier)
    with pytest.raises(BitmojiError, match="not a bitmoji checkpoint"):
        read_checkpoint(path)


class RunsCodeWhenUnpickled:
    """Unpickling this calls os.mkdir(marker): proof of whether a loader executes code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_checkpoint_carrying_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    payload = {**fields(), "state_dict": create_model("compact").state_dict()}
    torch.save({**payload, "extra": RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(BitmojiError, match="not a bitmoji checkpoint"):
        read_checkpoint(path)
    assert not marker.exists()
    # Control: an unsafe load of the same file does run the code.
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_pickled_module_inside_a_checkpoint_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sneaky.pt"
    model = create_model("compact")
    torch.save({**fields(), "state_dict": model.state_dict(), "extra": model}, path)
    with pytest.raises(BitmojiError, match="not a bitmoji checkpoint"):
        read_checkpoint(path)


@pytest.mark.parametrize("missing", ["model", "state_dict", "preprocess"])
def test_dict_without_required_key_is_refused(tmp_path: Path, missing: str) -> None:
    payload = {**fields(), "format": FORMAT_VERSION, "state_dict": create_model("compact").state_dict()}
    del payload[missing]
    path = tmp_path / "partial.pt"
    torch.save(payload, path)
    with pytest.raises(BitmojiError, match="not a bitmoji checkpoint"):
        read_checkpoint(path)


@pytest.mark.parametrize("content", [[1, 2, 3], "model", {"a": torch.zeros(2)}])
def test_non_checkpoint_torch_files_are_refused(tmp_path: Path, content: object) -> None:
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(BitmojiError, match="not a bitmoji checkpoint"):
        read_checkpoint(path)


def test_unknown_model_name_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    save_checkpoint(path, create_model("compact"), **fields(model="vit-huge"))
    with pytest.raises(BitmojiError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert "'vit-huge'" in message
    for known in MODELS:
        assert known in message


# --------------------------------------------------------------------------------------------
# Format versions


def saved_with_format(path: Path, version: object, **extra) -> Path:
    """A checkpoint as save_checkpoint writes it, with its format entry set to `version`."""
    save_checkpoint(path, trained_like_model(), **fields(**extra))
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format": version}, path)
    return path


def test_a_dict_without_format_version_is_refused_as_foreign(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({**fields(), "state_dict": create_model("compact").state_dict()}, path)
    with pytest.raises(BitmojiError, match="not a bitmoji checkpoint .it has no format version"):
        read_checkpoint(path)


def test_a_newer_format_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = saved_with_format(tmp_path / "future.pt", FORMAT_VERSION + 1)
    with pytest.raises(BitmojiError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert f"format {FORMAT_VERSION + 1}" in message and f"({FORMAT_VERSION})" in message
    assert "upgrade bitmoji-ml" in message


@pytest.mark.parametrize("version", [0, -1, "2", 1.5, True, None])
def test_a_malformed_format_entry_is_refused(tmp_path: Path, version: object) -> None:
    path = saved_with_format(tmp_path / "odd.pt", version)
    with pytest.raises(BitmojiError, match="not a bitmoji checkpoint .format"):
        read_checkpoint(path)


def test_a_format_1_best_checkpoint_still_rebuilds_its_model(tmp_path: Path) -> None:
    # Format 1 (round 1) had the same model entries: its best.pt files still export.
    path = saved_with_format(tmp_path / "old-best.pt", 1)
    model, preprocess = model_from_checkpoint(read_checkpoint(path))
    batch = images(2)
    with torch.no_grad():
        assert torch.equal(model(batch), trained_like_model()(batch))
    assert preprocess == PREPROCESS


def test_a_format_1_last_checkpoint_cannot_be_resumed(tmp_path: Path) -> None:
    path = saved_with_format(tmp_path / "old-last.pt", 1, history=[], optimizer={})
    with pytest.raises(BitmojiError, match="format 1; resuming needs format 2"):
        train_state_of(read_checkpoint(path), "run x's last.pt")


def test_a_best_checkpoint_has_no_training_state_to_resume(saved: tuple[Path, Classifier]) -> None:
    path, _ = saved
    with pytest.raises(BitmojiError, match="no training state"):
        train_state_of(read_checkpoint(path), str(path))


def test_the_training_state_is_found_in_a_last_checkpoint(tmp_path: Path) -> None:
    state = {"epoch": 3, "history": [{"epoch": 3}], "generator": torch.Generator().get_state()}
    path = tmp_path / "last.pt"
    save_checkpoint(path, create_model("compact"), **fields(**{TRAIN_STATE: state}))
    found = train_state_of(read_checkpoint(path), "last.pt")
    assert found["epoch"] == 3 and torch.equal(found["generator"], state["generator"])


# --------------------------------------------------------------------------------------------
# Rebuilding the model


def test_model_from_checkpoint_gives_identical_outputs(saved: tuple[Path, Classifier]) -> None:
    path, model = saved
    rebuilt, preprocess = model_from_checkpoint(read_checkpoint(path))
    assert preprocess == PREPROCESS
    assert isinstance(rebuilt, Classifier)
    assert not rebuilt.training
    assert not any(module.training for module in rebuilt.modules())
    batch = images(4)
    with torch.no_grad():
        expected = model(batch)
        assert torch.equal(rebuilt(batch), expected)
        # Eval mode matters: in train mode batch statistics would change the outputs.
        assert not torch.allclose(rebuilt.train()(batch), expected)
        # ... and the weights matter: a fresh model of the same kind disagrees.
        fresh = create_model("compact", PREPROCESS).eval()
        assert not torch.allclose(fresh(batch), expected)
    # The normalisation travelled with the weights.
    assert rebuilt.normalize.mean.flatten().tolist() == pytest.approx(PREPROCESS.mean)
    assert rebuilt.normalize.std.flatten().tolist() == pytest.approx(PREPROCESS.std)


def test_model_from_checkpoint_is_eval_even_if_saved_in_train_mode(tmp_path: Path) -> None:
    model = trained_like_model(1).train()
    path = tmp_path / "train-mode.pt"
    save_checkpoint(path, model, **fields())
    rebuilt, _ = model_from_checkpoint(read_checkpoint(path))
    assert not any(module.training for module in rebuilt.modules())
    batch = images(4, seed=9)
    with torch.no_grad():
        assert torch.equal(rebuilt(batch), model.eval()(batch))


def test_weights_for_another_model_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pt"
    save_checkpoint(path, create_model("compact"), **fields(model="seed-cnn"))
    with pytest.raises(BitmojiError, match="seed-cnn"):
        model_from_checkpoint(read_checkpoint(path))


def test_weights_of_the_wrong_shape_are_refused(saved: tuple[Path, Classifier]) -> None:
    path, _ = saved
    payload = read_checkpoint(path)
    key = next(key for key in payload["state_dict"] if key.endswith("weight"))
    payload["state_dict"][key] = torch.zeros(1, 2, 3)
    with pytest.raises(BitmojiError, match="do not fit"):
        model_from_checkpoint(payload)


def test_missing_and_extra_weights_are_refused(saved: tuple[Path, Classifier]) -> None:
    path, _ = saved
    payload = read_checkpoint(path)
    del payload["state_dict"]["net.0.0.weight"]
    with pytest.raises(BitmojiError, match="do not fit"):
        model_from_checkpoint(payload)
    payload = read_checkpoint(path)
    payload["state_dict"]["net.extra.weight"] = torch.zeros(3)
    with pytest.raises(BitmojiError, match="do not fit"):
        model_from_checkpoint(payload)


def test_a_checkpoint_names_its_classes_and_one_without_them_is_bitmojis(tmp_path: Path) -> None:
    from bitmoji_ml.checkpoints import checkpoint_classes
    from bitmoji_ml.data.classes import BITMOJI, Classes

    three = Classes(("cat", "dog", "fox"))
    save_checkpoint(
        tmp_path / "three.pt", create_model("compact", num_classes=3), **fields(classes=three.to_dict())
    )
    payload = read_checkpoint(tmp_path / "three.pt")
    assert checkpoint_classes(payload) == three
    model, preprocess = model_from_checkpoint(payload)
    with torch.no_grad():
        assert model(torch.zeros((1, preprocess.size, preprocess.size, 3), dtype=torch.uint8)).shape == (1, 3)
    save_checkpoint(tmp_path / "old.pt", create_model("compact"), **fields())  # before classes were recorded
    assert checkpoint_classes(read_checkpoint(tmp_path / "old.pt")) == BITMOJI
    payload["classes"] = {"names": ["cat", "dog"]}  # two names for three outputs
    with pytest.raises(BitmojiError, match="do not fit"):
        model_from_checkpoint(payload)
    payload["classes"] = {"labels": ["cat"]}
    with pytest.raises(BitmojiError, match="malformed classes"):
        model_from_checkpoint(payload)


def test_what_registration_receives_of_a_checkpoint_holds_no_tensors(tmp_path: Path):
    """export-onnx sends the MLflow process (which never imports torch) the checkpoint without
    its tensors: weights and a real training state, as `train` writes last.pt."""
    from bitmoji_ml.export.source import source_from_file
    from bitmoji_ml.recipe import Recipe
    from bitmoji_ml.training.state import new_train_state

    config = Recipe(model="compact", epochs=3, threads=1, device="cpu")
    state = new_train_state(config, PREPROCESS, torch.device("cpu"), 4, 3)
    path = tmp_path / "last.pt"
    save_checkpoint(path, state.evaluated, **fields(), **{TRAIN_STATE: state.state_dict()})
    source = source_from_file(path, "run-1", "a checkpoint")
    plain = source.without_tensors()

    def tensors(value) -> int:
        if isinstance(value, torch.Tensor):
            return 1
        if isinstance(value, dict):
            return sum(tensors(item) for item in value.values())
        if isinstance(value, list | tuple):
            return sum(tensors(item) for item in value)
        return 0

    assert tensors(source.payload) > 0  # the check sees the tensors a checkpoint holds
    assert tensors(plain.payload) == 0
    assert plain.payload["data_digest"] == "abc123"
    assert (plain.run_id, plain.sha256) == (source.run_id, source.sha256)
