"""The default model: `compact`'s conv + max-pool stages at 64 px, with the two convolutions at
32 and 16 px depthwise-separable. Those full 3x3 convolutions cost most of compact's multiply-
adds; a depthwise 3x3 followed by a pointwise 1x1 sees the same neighbourhood for about a
seventh, so the network needs about half of the CPU time of compact at its 72 px. The
convolutions at 8 and 4 px stay full: making the one at 8 px separable too cost accuracy.
"""

from __future__ import annotations

from torch import nn

from bitmoji_ml.models.compact import BASE_CHANNELS, conv_block


def separable_block(channels_in: int, channels_out: int) -> nn.Sequential:
    """Depthwise 3x3 conv, BatchNorm, ReLU, then a pointwise 1x1 conv block."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_in, 3, padding=1, groups=channels_in, bias=False),
        nn.BatchNorm2d(channels_in),
        nn.ReLU(inplace=True),
        conv_block(channels_in, channels_out, kernel=1),
    )


def build_separable(num_classes: int = 2, *, width: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """A stride-2 stem (64 -> 32 px); separable + max-pool stages at 32 and 16 px and a full
    conv + max-pool stage at 8 px, each doubling the channels; a last full 3x3 conv at 4 px,
    global average pooling and one linear layer: 226 k parameters at width 1 (16 stem channels)."""
    width = max(1, round(BASE_CHANNELS * width))  # stem channels
    return nn.Sequential(
        conv_block(3, width, stride=2),
        separable_block(width, width * 2),
        nn.MaxPool2d(2),
        separable_block(width * 2, width * 4),
        nn.MaxPool2d(2),
        conv_block(width * 4, width * 8),
        nn.MaxPool2d(2),
        conv_block(width * 8, width * 8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(width * 8, num_classes),
    )
