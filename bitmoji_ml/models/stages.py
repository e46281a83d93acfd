"""The project's CNNs as one family: a stride-2 3x3 stem, then stages of one 3x3 block each,
a 2x2 max-pool between stages, global average pooling, dropout and one linear layer.

Each stage is either a full 3x3 convolution or a depthwise-separable one (depthwise 3x3, then
a pointwise 1x1), so a model is a string of stage kinds and channel multipliers of the stem.
Full convolutions carry the most detail; separable ones see the same neighbourhood for a
fraction of the multiply-adds. Where each kind goes decides both accuracy and CPU time.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

BASE_CHANNELS = 16  # channels of the stem at width 1
FULL = "full"
SEPARABLE = "separable"


def conv_block(channels_in: int, channels_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """kernel x kernel conv (3x3 by default), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


def separable_block(channels_in: int, channels_out: int) -> nn.Sequential:
    """Depthwise 3x3 conv, BatchNorm, ReLU, then a pointwise 1x1 conv block."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_in, 3, padding=1, groups=channels_in, bias=False),
        nn.BatchNorm2d(channels_in),
        nn.ReLU(inplace=True),
        conv_block(channels_in, channels_out, kernel=1),
    )


STAGE_BLOCKS = {FULL: conv_block, SEPARABLE: separable_block}


def build_stages(
    kinds: Sequence[str],
    multipliers: Sequence[int],
    *,
    width: float = 1.0,
    num_classes: int = 2,
    dropout: float = 0.2,
) -> nn.Sequential:
    """The network with stage `i` of kind `kinds[i]` (FULL or SEPARABLE) and `multipliers[i]`
    times the stem's channels; the stem has BASE_CHANNELS x `width` channels, so the parameter
    count grows with about the square of `width`."""
    if len(kinds) != len(multipliers) or not kinds:
        raise ValueError("one multiplier per stage, and at least one stage")
    stem = max(1, round(BASE_CHANNELS * width))
    layers: list[nn.Module] = [conv_block(3, stem, stride=2)]
    channels_in = stem
    for index, (kind, multiplier) in enumerate(zip(kinds, multipliers, strict=True)):
        if index:
            layers.append(nn.MaxPool2d(2))
        channels_out = stem * multiplier
        layers.append(STAGE_BLOCKS[kind](channels_in, channels_out))
        channels_in = channels_out
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(channels_in, num_classes),
    ]
    return nn.Sequential(*layers)


def build_compact(num_classes: int = 2, *, width: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """Four full stages, 16 -> 32 -> 64 -> 128 -> 128 channels: 246 k parameters at width 1.
    The previous default, at 72 px."""
    return build_stages((FULL,) * 4, (2, 4, 8, 8), width=width, num_classes=num_classes, dropout=dropout)


def build_separable(num_classes: int = 2, *, width: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """`compact` with its stages at 32 and 16 px (of 64) separable: 226 k parameters at width 1,
    about half of compact's CPU at 72 px, but five more out-of-fold errors in 3000 faces."""
    kinds = (SEPARABLE, SEPARABLE, FULL, FULL)
    return build_stages(kinds, (2, 4, 8, 8), width=width, num_classes=num_classes, dropout=dropout)


def build_hybrid(num_classes: int = 2, *, width: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """`compact`'s full stages at 30, 15 and 7 px (of a 60 px input), where the detail is (a
    moustache, stubble, an earring), and a separable last stage at 3 px, where 128 channels
    make a full convolution cost most: 116 k parameters at width 1. Making the 7 px stage
    separable too cut 20 % more time but doubled the out-of-fold errors."""
    kinds = (FULL, FULL, FULL, SEPARABLE)
    return build_stages(kinds, (2, 4, 8, 8), width=width, num_classes=num_classes, dropout=dropout)
