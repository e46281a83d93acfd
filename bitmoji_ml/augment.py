"""Augmentation on whole batches of tensors: flip, shift/scale, colour jitter (each switchable)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator,
    flip: bool = True,
    shift: float = 0.0,
    scale: float = 0.0,
    jitter: float = 0.0,
) -> torch.Tensor:
    """uint8 NHWC batch in, float NHWC batch in [0, 255] out, each image randomly transformed."""
    x = images.permute(0, 3, 1, 2).to(torch.float32)
    n = x.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, generator=generator) * (high - low) + low

    if flip:
        flipped = uniform(0, 1) < 0.5
        x = torch.where(flipped.view(n, 1, 1, 1), x.flip(3), x)
    if shift > 0 or scale > 0:
        zoom = uniform(1 - scale, 1 + scale)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = 1 / zoom
        theta[:, 1, 1] = 1 / zoom
        theta[:, :, 2] = uniform(-2 * shift, 2 * shift, 2)  # grid units: the image spans 2
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        brightness = uniform(1 - jitter, 1 + jitter).view(n, 1, 1, 1)
        contrast = uniform(1 - jitter, 1 + jitter).view(n, 1, 1, 1)
        saturation = uniform(1 - jitter, 1 + jitter).view(n, 1, 1, 1)
        x = x * brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean
        gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - gray) * saturation + gray
        x = x.clamp(0, 255)
    return x.permute(0, 2, 3, 1)
