"""The model registry and the in-model normalisation: shapes, parameter counts, error messages
and agreement with torchvision's reference ToTensor + Normalize transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms
from torchvision.models import resnet18

from bitmoji_ml.data.images import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import (
    DEFAULT_MODEL,
    MODELS,
    count_parameters,
    create_model,
    model_spec,
)
from bitmoji_ml.models.normalize import Classifier, Normalize

BATCH = 2


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(autouse=True, scope="module")
def release_built_models():
    yield
    _BUILT.clear()  # seed-cnn alone holds 190 MB of weights


# Building seed-cnn initialises 46 M weights; build each registered model once per module.
_BUILT: dict[str, Classifier] = {}


def built(name: str) -> Classifier:
    """A cached model for read-only checks (eval mode, never modified)."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = create_model(name).eval()
    return _BUILT[name]


def uint8_batch(size: int, batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator)


def reference_transform(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """torchvision's classic pipeline on the PIL image: CHW floats."""
    pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    return pipeline(Image.fromarray(image))


# --------------------------------------------------------------------------------------------
# Registry


def test_registry_has_the_three_models_and_a_valid_default() -> None:
    assert {"compact", "seed-cnn", "resnet18"} <= set(MODELS)
    assert DEFAULT_MODEL in MODELS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_gives_two_float_logits_per_image(name: str) -> None:
    model = built(name)
    size = model_spec(name).preprocess.size
    with torch.no_grad():
        logits = model(uint8_batch(size))
    assert logits.shape == (BATCH, 2)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    # Different images give different logits: the network actually looks at its input.
    assert not torch.equal(logits[0], logits[1])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_model_gets_one_output_per_class(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    last = [module for module in model.modules() if isinstance(module, nn.Linear)][-1]
    assert last.out_features == 5
    if name != "seed-cnn":  # its 46 M weights: the layer is enough
        with torch.no_grad():
            assert model(uint8_batch(model_spec(name).preprocess.size)).shape == (BATCH, 5)


def test_two_classes_build_the_same_network_as_before_classes_existed() -> None:
    torch.manual_seed(0)
    two = create_model(DEFAULT_MODEL, num_classes=2).state_dict()
    torch.manual_seed(0)
    default = create_model(DEFAULT_MODEL).state_dict()
    assert two.keys() == default.keys() and all(torch.equal(two[key], default[key]) for key in two)
    with pytest.raises(BitmojiError, match="two or more classes"):
        create_model(DEFAULT_MODEL, num_classes=1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_create_model_is_a_classifier_with_the_registered_preprocess(name: str) -> None:
    model = built(name)
    spec = model_spec(name)
    assert isinstance(model, Classifier)
    assert isinstance(model.normalize, Normalize)
    assert model.normalize.mean.flatten().tolist() == pytest.approx(spec.preprocess.mean)
    assert model.normalize.std.flatten().tolist() == pytest.approx(spec.preprocess.std)


def test_seed_cnn_parameter_count_matches_its_layer_shapes() -> None:
    # Spatial size through the network: 224 -conv5-> 220 -pool2-> 110 -conv5-> 106 -pool2-> 53.
    side = model_spec("seed-cnn").preprocess.size
    assert side == 224
    side = ((side - 4) // 2 - 4) // 2
    assert side == 53

    def conv(c_in: int, c_out: int, k: int) -> int:
        return c_in * c_out * k * k + c_out

    def linear(n_in: int, n_out: int) -> int:
        return n_in * n_out + n_out

    expected = (
        conv(3, 6, 5) + conv(6, 16, 5) + linear(16 * side * side, 1024) + linear(1024, 512) + linear(512, 2)
    )
    assert count_parameters(built("seed-cnn")) == expected
    assert 46_000_000 < expected < 47_000_000  # "46.5 M parameters" in the docs


def test_compact_is_small() -> None:
    assert 10_000 < count_parameters(built("compact")) < 1_000_000


def test_default_is_the_hybrid_model_with_fewer_parameters_than_compact() -> None:
    assert DEFAULT_MODEL == "hybrid"
    assert count_parameters(built("hybrid")) < count_parameters(built("compact"))
    # 128 px JPEGs reach 64 px by DCT scaling; the centre 60 px are kept
    assert (model_spec("hybrid").preprocess.size, model_spec("hybrid").preprocess.resize) == (60, 64)
    depthwise = [layer[0].groups > 1 for layer in built("hybrid").net if isinstance(layer, nn.Sequential)]
    assert depthwise == [False, False, False, False, True]  # stem, three full stages, one separable


EARLIER_LAYOUTS = {  # from the builders before both became instances of build_stages
    "compact": (245_650, 34, {"net.1.0.weight": (32, 16, 3, 3), "net.3.0.weight": (64, 32, 3, 3)}),
    "separable": (225_698, 46, {"net.1.0.weight": (16, 1, 3, 3), "net.3.0.weight": (32, 1, 3, 3)}),
}


@pytest.mark.parametrize("name", sorted(EARLIER_LAYOUTS))
def test_earlier_defaults_keep_their_layout_so_their_checkpoints_still_load(name: str) -> None:
    parameters, tensors, shapes = EARLIER_LAYOUTS[name]
    state = built(name).state_dict()
    assert count_parameters(built(name)) == parameters
    assert len(state) == tensors
    assert {key: tuple(state[key].shape) for key in shapes} == shapes
    assert tuple(state["net.7.0.weight"].shape) == (128, 128, 3, 3)  # the last stage, full
    assert tuple(state["net.11.weight"].shape) == (2, 128)


def test_resnet18_count_matches_torchvision() -> None:
    reference = resnet18(weights=None, num_classes=2)
    expected = sum(p.numel() for p in reference.parameters())
    assert count_parameters(built("resnet18")) == expected


def test_count_parameters_counts_only_trainable_ones() -> None:
    model = create_model("compact")
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    last = model.net[-1]
    assert isinstance(last, nn.Linear)
    last.weight.requires_grad_(False)
    assert count_parameters(model) == total - last.weight.numel()


def test_normalisation_buffers_are_not_parameters() -> None:
    model = built("compact")
    names = {name for name, _ in model.named_parameters()}
    assert "normalize.mean" not in names and "normalize.std" not in names


@pytest.mark.parametrize("name", ["nope", "", "Compact", "seed_cnn"])
def test_unknown_model_name_is_refused_listing_known_names(name: str) -> None:
    for call in (model_spec, create_model):
        with pytest.raises(BitmojiError) as caught:
            call(name)
        message = str(caught.value)
        assert repr(name) in message
        for known in MODELS:
            assert known in message


# --------------------------------------------------------------------------------------------
# Normalisation inside the model


@pytest.mark.parametrize("seed", [0, 1])
def test_normalize_matches_torchvision_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(20, 28, 3), dtype=np.uint8)  # not square: H != W
    model = built("compact")
    got = model.normalize(torch.from_numpy(image)[None])
    expected = reference_transform(image, IMAGENET_MEAN, IMAGENET_STD)[None]
    assert got.shape == (1, 3, 20, 28)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_normalize_extremes_are_exact() -> None:
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)
    layer = Normalize(mean, std)
    black = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    white = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
    for images, pixel in ((black, 0.0), (white, 1.0)):
        out = layer(images)
        for channel in range(3):
            expected = (pixel - mean[channel]) / std[channel]
            assert torch.allclose(out[0, channel], torch.full((2, 2), expected))


def test_float_input_gives_the_same_as_uint8() -> None:
    images = uint8_batch(64, batch=3, seed=5)
    model = built("compact")
    with torch.no_grad():
        from_uint8 = model.normalize(images)
        from_float = model.normalize(images.to(torch.float32))
        assert torch.equal(from_uint8, from_float)
        assert torch.equal(model(images), model(images.to(torch.float32)))


def test_normalize_permutes_channels_not_pixels() -> None:
    # One distinct value per (row, column, channel); NHWC -> NCHW must keep each in place.
    images = torch.arange(2 * 4 * 5 * 3, dtype=torch.float32).view(2, 4, 5, 3) % 256
    layer = Normalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    out = layer(images)
    assert out.shape == (2, 3, 4, 5)
    for n, h, w, c in [(0, 0, 0, 0), (1, 3, 4, 2), (0, 2, 1, 1), (1, 0, 3, 0)]:
        assert out[n, c, h, w].item() == pytest.approx(images[n, h, w, c].item() / 255.0)


@pytest.mark.parametrize("size", [48, 96])
def test_compact_works_at_other_sizes(size: int) -> None:
    with torch.no_grad():
        logits = built("compact")(uint8_batch(size))
    assert logits.shape == (BATCH, 2)
    assert torch.isfinite(logits).all()


def test_mean_and_std_are_in_the_state_dict() -> None:
    mean, std = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)
    model = create_model("compact", Preprocess(mean=mean, std=std))
    state = model.state_dict()
    assert state["normalize.mean"].flatten().tolist() == pytest.approx(mean)
    assert state["normalize.std"].flatten().tolist() == pytest.approx(std)
    # Loading that state into a model with the default mean/std carries the values over.
    other = create_model("compact")
    assert not torch.allclose(other.normalize.mean, state["normalize.mean"])
    other.load_state_dict(state)
    assert torch.equal(other.normalize.mean, state["normalize.mean"])
    assert torch.equal(other.normalize.std, state["normalize.std"])


def test_create_model_uses_the_given_preprocess_mean_and_std() -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.1)
    model = create_model("compact", Preprocess(size=32, resize=40, mean=mean, std=std))
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    got = model.normalize(torch.from_numpy(image)[None])
    torch.testing.assert_close(got, reference_transform(image, mean, std)[None], atol=1e-6, rtol=0)
    default = built("compact").normalize(torch.from_numpy(image)[None])
    assert not torch.allclose(got, default)
