"""The default model: a small BatchNorm CNN with global pooling, sized for fast CPU work."""

from __future__ import annotations

from torch import nn


def conv_block(channels_in: int, channels_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """kernel x kernel conv (3x3 by default), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


BASE_CHANNELS = 16  # channels of the stem at width 1


def build_compact(num_classes: int = 2, *, width: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """A stride-2 stem, then three conv + max-pool stages doubling the channels, a last conv,
    global average pooling and one linear layer: 246 k parameters at width 1 (16 stem
    channels); the parameter count grows with the square of `width`."""
    stem = max(1, round(BASE_CHANNELS * width))
    widths = [stem, stem * 2, stem * 4, stem * 8]
    layers: list[nn.Module] = [conv_block(3, widths[0], stride=2)]
    for channels_in, channels_out in zip(widths, widths[1:], strict=False):
        layers += [conv_block(channels_in, channels_out), nn.MaxPool2d(2)]
    layers += [
        conv_block(widths[-1], widths[-1]),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(widths[-1], num_classes),
    ]
    return nn.Sequential(*layers)
