"""Preprocessing inside the network: raw uint8 NHWC pixels in, normalised NCHW floats out."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x / 255 - mean) / std on NHWC input, returned as NCHW (channels-last in memory).

    Keeping this in the model means the ONNX file takes plain pixels and no caller can apply a
    different mean/std than training did.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.permute(0, 3, 1, 2).to(torch.float32)
        return (pixels / 255.0 - self.mean) / self.std


class Classifier(nn.Module):
    """Normalize followed by a network that maps NCHW floats to one logit per class."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(images))
