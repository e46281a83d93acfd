"""The default model: stride-2 convolutions from the first layer on, sized for cheap CPU inference.

Every stage halves the resolution with a strided 3x3 convolution instead of a full-resolution
convolution followed by max-pooling, so no layer runs at the input's full 64 x 64 and the
multiply-adds drop about 3x against `compact` (0.13 ms vs 0.41 ms of CPU per image, one thread).
"""

from __future__ import annotations

from torch import nn

from bitmoji_ml.models.compact import conv_block


def depthwise_block(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (BatchNorm, ReLU) then pointwise 1x1 (BatchNorm, ReLU)."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_in, 3, stride=stride, padding=1, groups=channels_in, bias=False),
        nn.BatchNorm2d(channels_in),
        nn.ReLU(inplace=True),
        conv_block_1x1(channels_in, channels_out),
    )


def conv_block_1x1(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


def build_strided(num_classes: int = 2, width: int = 16, dropout: float = 0.2) -> nn.Module:
    """Four stride-2 3x3 conv blocks doubling the width (64 -> 4 px), one more conv at 4 x 4,
    global average pooling and one linear layer: 246 k parameters at width 16."""
    widths = [width, width * 2, width * 4, width * 8]
    layers: list[nn.Module] = [conv_block(3, widths[0], stride=2)]
    for channels_in, channels_out in zip(widths, widths[1:], strict=False):
        layers.append(conv_block(channels_in, channels_out, stride=2))
    layers += [
        conv_block(widths[-1], widths[-1]),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(widths[-1], num_classes),
    ]
    return nn.Sequential(*layers)


def build_depthwise(num_classes: int = 2, dropout: float = 0.2) -> nn.Module:
    """Trial: strided stem then depthwise-separable blocks."""
    return nn.Sequential(
        conv_block(3, 16, stride=2),
        depthwise_block(16, 32, 2),
        depthwise_block(32, 64),
        depthwise_block(64, 128, 2),
        depthwise_block(128, 128),
        depthwise_block(128, 256, 2),
        depthwise_block(256, 256),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(256, num_classes),
    )


def build_strided_deep(num_classes: int = 2, dropout: float = 0.2) -> nn.Module:
    """Trial: a stride-1 conv after each of the 16 and 8 px stages, no conv at 4 px."""
    return nn.Sequential(
        conv_block(3, 16, stride=2),
        conv_block(16, 32, stride=2),
        conv_block(32, 32),
        conv_block(32, 64, stride=2),
        conv_block(64, 64),
        conv_block(64, 128, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(128, num_classes),
    )
