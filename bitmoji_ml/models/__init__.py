"""Model registry: a name maps to a network factory and the preprocessing it expects."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models.normalize import Classifier
from bitmoji_ml.models.seed_cnn import build_seed_cnn
from bitmoji_ml.models.stages import build_compact, build_hybrid, build_separable
from bitmoji_ml.models.width import fixed_width


def build_resnet18(num_classes: int = 2, *, width: float = 1.0) -> nn.Module:
    """torchvision's ResNet-18, randomly initialised (nothing is downloaded); `width` must be 1."""
    from torchvision.models import resnet18

    fixed_width("resnet18", width)
    return resnet18(weights=None, num_classes=num_classes)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build its network (`build(num_classes, width=...)`, the channel-width
    multiplier of Recipe) and how its input is prepared."""

    build: Callable[..., nn.Module]
    preprocess: Preprocess
    summary: str
    scalable: bool = False  # whether `build` takes widths other than 1 (tune searches it then)


MODELS: dict[str, ModelSpec] = {
    "hybrid": ModelSpec(
        build_hybrid,
        Preprocess(size=60, resize=64, decoder="simplejpeg"),
        "BatchNorm CNN, full convs but a separable last stage, 60 px (JPEGs decoded by libjpeg-turbo "
        "at 1/2 scale to 64 px, centre 60 px kept)",
        scalable=True,
    ),
    "separable": ModelSpec(
        build_separable,
        Preprocess(size=64, resize=64, decoder="simplejpeg"),
        "BatchNorm CNN, separable at 32 and 16 px, full at 8 and 4 px, 64 px (libjpeg-turbo decode)",
        scalable=True,
    ),
    "compact": ModelSpec(
        build_compact,
        Preprocess(size=72, resize=72),
        "BatchNorm CNN, full convs throughout, 72 px (Pillow decode)",
        scalable=True,
    ),
    "seed-cnn": ModelSpec(build_seed_cnn, Preprocess(size=224, resize=256), "the baseline, 224 px"),
    "resnet18": ModelSpec(build_resnet18, Preprocess(size=128, resize=128), "ResNet-18, 128 px"),
}
DEFAULT_MODEL = "hybrid"


def model_spec(name: str) -> ModelSpec:
    """The registry entry for `name`, or a clear error listing the known names."""
    if name not in MODELS:
        raise BitmojiError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def create_model(
    name: str, preprocess: Preprocess | None = None, *, width: float = 1.0, num_classes: int = 2
) -> Classifier:
    """Build model `name` at `width` with normalisation inside; uint8 NHWC images in,
    `num_classes` logits out (logit i is class i of the lists' `Classes`)."""
    if num_classes < 2:
        raise BitmojiError(f"a classifier needs two or more classes, got {num_classes}")
    spec = model_spec(name)
    preprocess = preprocess or spec.preprocess
    return Classifier(spec.build(num_classes, width=width), preprocess.mean, preprocess.std)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
