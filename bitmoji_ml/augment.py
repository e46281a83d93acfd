"""Augmentation on whole batches of tensors: flip, shift/scale, colour jitter (each switchable).

Each kind of change is one pass over the batch, because this runs on the training's critical
path (a tenth of an epoch's time when it took a pass per arithmetic step): the flip, zoom and
shift are one affine resampling, and brightness, contrast and saturation, which are all linear
in the pixel's colour, one 3x3 colour matrix and offset per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Luma weights of the grey image that saturation moves towards (ITU-R BT.601); they sum to 1.
GREY = (0.299, 0.587, 0.114)


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

    mirror = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0) if flip else None
    if shift > 0 or scale > 0:
        zoom = uniform(1 - scale, 1 + scale)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = 1 / zoom
        theta[:, 1, 1] = 1 / zoom
        theta[:, :, 2] = uniform(-2 * shift, 2 * shift, 2)  # grid units: the image spans 2
        if mirror is not None:  # sample at (-x, y): the mirror image, zoomed and shifted
            theta[:, 0] *= mirror.view(n, 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    elif mirror is not None:
        x = torch.where(mirror.view(n, 1, 1, 1) < 0, x.flip(3), x)
    if jitter > 0:
        x = colour_jitter(
            x,
            uniform(1 - jitter, 1 + jitter),
            uniform(1 - jitter, 1 + jitter),
            uniform(1 - jitter, 1 + jitter),
        )
    return x.permute(0, 2, 3, 1)


def colour_jitter(
    x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor
) -> torch.Tensor:
    """Per image (NCHW floats in [0, 255]): scale by `brightness`; move away from the image's
    mean by `contrast`; move away from each pixel's grey by `saturation`; clip to [0, 255].
    In colour space these are y = b x, then c (y - m) + m, then s (y - g y) + g y with g the
    grey weights, so together z = c b S x + (1 - c) m with S = s I + (1 - s) 1 g^T, and
    S 1 = 1 because the grey weights sum to 1."""
    n = x.shape[0]
    mean = x.mean(dim=(1, 2, 3)) * brightness  # the image's mean after the brightness change
    identity, to_grey = torch.eye(3), torch.ones(3, 1) * torch.tensor(GREY)
    saturate = saturation.view(n, 1, 1) * identity + (1 - saturation).view(n, 1, 1) * to_grey
    matrix = saturate * (contrast * brightness).view(n, 1, 1)
    offset = ((1 - contrast) * mean).view(n, 1, 1)
    mixed = torch.baddbmm(offset, matrix, x.reshape(n, 3, -1))  # offset + matrix @ pixels
    return mixed.view_as(x).clamp_(0, 255)
