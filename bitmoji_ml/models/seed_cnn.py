"""The published baseline, layer for layer: 2 conv + 3 FC on 224 x 224 (46.5 M parameters)."""

from __future__ import annotations

from torch import nn

from bitmoji_ml.models.width import fixed_width


def build_seed_cnn(num_classes: int = 2, *, width: float = 1.0) -> nn.Module:
    """conv(3->6,k5) pool conv(6->16,k5) pool FC 16*53*53->1024->512->classes, ReLU between.
    The baseline is reproduced as published: `width` must be 1."""
    fixed_width("seed-cnn", width)
    return nn.Sequential(
        nn.Conv2d(3, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 53 * 53, 1024),
        nn.ReLU(),
        nn.Linear(1024, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )
