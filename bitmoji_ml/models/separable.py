"""The default model: `compact`'s conv + max-pool stages at 64 px, with the convolutions at 32,
16 and 8 px depthwise-separable. A full 3x3 convolution there costs most of compact's multiply-
adds; a depthwise 3x3 followed by a pointwise 1x1 sees the same neighbourhood for about a tenth,
so the network runs in about a third of compact's CPU time with two thirds of its parameters.
"""

from __future__ import annotations

from torch import nn

from bitmoji_ml.models.compact import conv_block


def separable_block(channels_in: int, channels_out: int) -> nn.Sequential:
    """Depthwise 3x3 conv, BatchNorm, ReLU, then a pointwise 1x1 conv block."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_in, 3, padding=1, groups=channels_in, bias=False),
        nn.BatchNorm2d(channels_in),
        nn.ReLU(inplace=True),
        conv_block(channels_in, channels_out, kernel=1),
    )


def build_separable(num_classes: int = 2, width: int = 16, dropout: float = 0.2) -> nn.Module:
    """A stride-2 stem (64 -> 32 px), three separable + max-pool stages doubling the width
    (32 -> 4 px), a last full 3x3 conv, global average pooling and one linear layer: 161 k
    parameters at width 16."""
    widths = [width, width * 2, width * 4, width * 8]
    layers: list[nn.Module] = [conv_block(3, widths[0], stride=2)]
    for channels_in, channels_out in zip(widths, widths[1:], strict=False):
        layers += [separable_block(channels_in, channels_out), nn.MaxPool2d(2)]
    layers += [
        conv_block(widths[-1], widths[-1]),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(widths[-1], num_classes),
    ]
    return nn.Sequential(*layers)
