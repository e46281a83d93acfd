"""Batch augmentation: shapes, ranges, identity when off, flips, determinism, shift/scale
geometry and colour jitter."""

from __future__ import annotations

import pytest
import torch

from bitmoji_ml.augment import augment_batch

SIZE = 24


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def random_batch(n: int = 8, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Noise images: asymmetric, so a flip or any sub-pixel move changes them."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ramp(n: int, size: int, horizontal: bool) -> torch.Tensor:
    """value = 50 + 4 * column (or row): a linear image, so bilinear sampling reads off the
    source coordinate exactly away from the borders."""
    line = 50 + 4 * torch.arange(size)
    image = line.view(1, size) if horizontal else line.view(size, 1)
    image = image.expand(size, size)
    return image[None, :, :, None].expand(n, size, size, 3).to(torch.uint8).contiguous()


# --------------------------------------------------------------------------------------------
# Shapes, ranges, identity


def test_output_is_float_nhwc_in_range_with_everything_on() -> None:
    images = random_batch(16)
    out = augment_batch(images, gen(), flip=True, shift=0.2, scale=0.2, jitter=0.5)
    assert out.shape == images.shape
    assert out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    assert torch.isfinite(out).all()


def test_extreme_jitter_stays_in_range() -> None:
    images = torch.full((8, 8, 8, 3), 250, dtype=torch.uint8)
    images[:, :4] = 5
    images[..., 0] = 255
    out = augment_batch(images, gen(1), flip=False, jitter=0.9)
    assert out.min() >= 0 and out.max() <= 255


def test_non_square_images_keep_their_shape() -> None:
    images = torch.randint(0, 256, (4, 10, 14, 3), dtype=torch.uint8, generator=gen())
    out = augment_batch(images, gen(), flip=True, shift=0.1, scale=0.1, jitter=0.2)
    assert out.shape == (4, 10, 14, 3)


def test_all_off_is_the_identity() -> None:
    images = random_batch()
    out = augment_batch(images, gen(), flip=False, shift=0.0, scale=0.0, jitter=0.0)
    assert out.dtype == torch.float32
    assert torch.equal(out, images.to(torch.float32))


def test_input_is_not_modified() -> None:
    images = random_batch()
    before = images.clone()
    augment_batch(images, gen(), flip=True, shift=0.1, scale=0.1, jitter=0.3)
    assert torch.equal(images, before)


# --------------------------------------------------------------------------------------------
# Flip


def test_flip_gives_each_image_or_its_mirror_and_both_occur() -> None:
    images = random_batch(64)
    out = augment_batch(images, gen(3), flip=True)
    original = images.to(torch.float32)
    mirrored = original.flip(2)  # NHWC: dimension 2 is the width
    same = [torch.equal(out[i], original[i]) for i in range(64)]
    flipped = [torch.equal(out[i], mirrored[i]) for i in range(64)]
    assert all(a != b for a, b in zip(same, flipped, strict=True))  # exactly one of the two
    assert any(same) and any(flipped)
    # A fair coin: 64 tosses land well inside 10..54 heads.
    assert 10 <= sum(flipped) <= 54


def test_flip_is_horizontal_not_vertical() -> None:
    images = ramp(32, SIZE, horizontal=False)  # symmetric left-right, not top-bottom
    out = augment_batch(images, gen(), flip=True)
    assert torch.equal(out, images.to(torch.float32))


# --------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_same_output_different_seed_different_output() -> None:
    images = random_batch(16)
    settings = {"flip": True, "shift": 0.1, "scale": 0.1, "jitter": 0.3}
    first = augment_batch(images, gen(42), **settings)
    second = augment_batch(images, gen(42), **settings)
    other = augment_batch(images, gen(43), **settings)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_generator_advances_between_batches() -> None:
    images = random_batch(16)
    generator = gen(5)
    first = augment_batch(images, generator, flip=True, shift=0.1)
    second = augment_batch(images, generator, flip=True, shift=0.1)
    assert not torch.equal(first, second)


def test_global_rng_is_not_used() -> None:
    images = random_batch(16)
    torch.manual_seed(0)
    first = augment_batch(images, gen(9), flip=True, shift=0.1, scale=0.1, jitter=0.3)
    torch.manual_seed(1)
    second = augment_batch(images, gen(9), flip=True, shift=0.1, scale=0.1, jitter=0.3)
    assert torch.equal(first, second)


# --------------------------------------------------------------------------------------------
# Shift and scale


@pytest.mark.parametrize(("shift", "scale"), [(0.1, 0.0), (0.0, 0.1), (0.1, 0.1)])
def test_shift_and_scale_change_every_image_but_keep_shape(shift: float, scale: float) -> None:
    images = random_batch(16)
    out = augment_batch(images, gen(), flip=False, shift=shift, scale=scale)
    assert out.shape == images.shape
    difference = (out - images.to(torch.float32)).abs().flatten(1).amax(1)
    assert (difference > 0).all()
    assert difference.mean() > 5


@pytest.mark.parametrize("horizontal", [True, False])
def test_shift_moves_at_most_the_given_fraction_of_the_side(horizontal: bool) -> None:
    size, shift = 40, 0.1
    images = ramp(64, size, horizontal)
    out = augment_batch(images, gen(7), flip=False, shift=shift)
    centre = out[:, size // 2, size // 2, 0]
    moved = (centre - images[:, size // 2, size // 2, 0].to(torch.float32)) / 4  # pixels
    limit = shift * size  # 4 px
    assert moved.abs().max() <= limit + 1e-3
    assert moved.abs().max() > limit / 2  # the range is actually used
    assert (moved > 0).any() and (moved < 0).any()  # both directions
    # A pure translation keeps the ramp's slope (1 step per pixel) in the middle.
    middle = out[:, 15:25, 15:25, 0]
    steps = middle.diff(dim=2 if horizontal else 1) / 4
    torch.testing.assert_close(steps, torch.ones_like(steps), atol=1e-3, rtol=0)


def test_scale_zooms_within_the_given_fraction_about_the_centre() -> None:
    size, scale = 40, 0.1
    images = ramp(64, size, horizontal=True)
    out = augment_batch(images, gen(8), flip=False, scale=scale)
    # Slope in the middle: 1 / zoom source pixels per output pixel, zoom in [0.9, 1.1].
    slope = (out[:, size // 2, 24, 0] - out[:, size // 2, 16, 0]) / (4 * 8)
    assert slope.min() >= 1 / (1 + scale) - 1e-4
    assert slope.max() <= 1 / (1 - scale) + 1e-4
    assert (slope > 1.01).any() and (slope < 0.99).any()  # zooms in and out
    # The centre of the image stays put (no shift asked for): the midpoint between the two
    # middle columns keeps its value.
    centre = (out[:, size // 2, size // 2 - 1, 0] + out[:, size // 2, size // 2, 0]) / 2
    expected = 50 + 4 * (size - 1) / 2
    torch.testing.assert_close(centre, torch.full_like(centre, expected), atol=1e-3, rtol=0)


# --------------------------------------------------------------------------------------------
# Colour jitter


def test_jitter_changes_colour_statistics() -> None:
    images = random_batch(32)
    out = augment_batch(images, gen(), flip=False, jitter=0.4)
    original = images.to(torch.float32)
    mean_in, mean_out = original.mean(dim=(1, 2)), out.mean(dim=(1, 2))  # per image, channel
    std_in, std_out = original.std(dim=(1, 2)), out.std(dim=(1, 2))
    assert (mean_in - mean_out).abs().amax(1).min() > 0  # every image changed colour
    assert (mean_in - mean_out).abs().mean() > 2
    assert (std_in - std_out).abs().mean() > 2


def test_jitter_is_colour_only_luminance_is_an_affine_map() -> None:
    # Mid-range noise so nothing clamps: brightness and contrast are affine per image and
    # saturation keeps luminance, so output luminance = a * input luminance + b per image.
    generator = gen(4)
    images = torch.randint(90, 166, (16, SIZE, SIZE, 3), dtype=torch.uint8, generator=generator)
    out = augment_batch(images, gen(6), flip=False, jitter=0.2)
    weights = torch.tensor([0.299, 0.587, 0.114])
    lum_in = (images.to(torch.float64) * weights.double()).sum(3).flatten(1)
    lum_out = (out.to(torch.float64) * weights.double()).sum(3).flatten(1)
    for x, y in zip(lum_in, lum_out, strict=True):
        design = torch.stack([x, torch.ones_like(x)], dim=1)
        solution = torch.linalg.lstsq(design, y[:, None]).solution
        residual = (design @ solution).flatten() - y
        assert residual.abs().max() < 1e-2
        assert solution[0].item() > 0


def test_jitter_keeps_grey_grey_and_brightness_within_strength() -> None:
    jitter = 0.2
    generator = gen(11)
    levels = torch.randint(60, 141, (64, 1, 1, 1), dtype=torch.uint8, generator=generator)
    images = levels.expand(64, 6, 6, 3).contiguous()
    images[:, :3] = images[:, :3] // 2  # two grey levels per image
    out = augment_batch(images, gen(12), flip=False, jitter=jitter)
    # Saturation has nothing to act on: R == G == B still.
    torch.testing.assert_close(out[..., 0], out[..., 1], atol=1e-3, rtol=0)
    torch.testing.assert_close(out[..., 0], out[..., 2], atol=1e-3, rtol=0)
    # Contrast keeps the mean, so the mean changes by the brightness factor only.
    ratio = out.mean(dim=(1, 2, 3)) / images.to(torch.float32).mean(dim=(1, 2, 3))
    assert ratio.min() >= 1 - jitter - 1e-4
    assert ratio.max() <= 1 + jitter + 1e-4
    assert ratio.max() - ratio.min() > jitter  # factors really vary across the batch
