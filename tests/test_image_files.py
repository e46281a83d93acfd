"""Any image file a user has, one generated file per case, through both decoders: the files of
someone's own dataset are not Bitmoji's 128 px RGB JPEGs. (The Bitmoji-shaped cases, broken files
and the decompression-bomb header are in test_data.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bitmoji_ml.data.dataset import list_images
from bitmoji_ml.data.images import (
    IMAGE_EXTENSIONS,
    MAX_ASPECT,
    ImageError,
    Preprocess,
    check_image,
    decode_image,
)

SPECS = [Preprocess(size=16, resize=16), Preprocess(size=16, resize=16, decoder="simplejpeg")]
RED = (255, 0, 0)


def flat(mode: str, colour, size=(24, 24)) -> Image.Image:
    return Image.new(mode, size, colour)


def greyscale_png(path: Path) -> tuple:
    flat("L", 90).save(path / "grey.png")
    return path / "grey.png", (90, 90, 90)


def greyscale_jpeg(path: Path) -> tuple:
    flat("L", 90).save(path / "grey.jpg", quality=95)
    return path / "grey.jpg", (90, 90, 90)


def rgba_webp_on_white(path: Path) -> tuple:
    flat("RGBA", (255, 0, 0, 0)).save(path / "clear.webp", lossless=True)
    return path / "clear.webp", (255, 255, 255)


def palette_gif_with_transparency(path: Path) -> tuple:
    image = flat("P", 3)
    image.putpalette([0, 0, 0] * 3 + [255, 0, 0] + [0, 0, 0] * 252)
    image.save(path / "sticker.gif", transparency=3)
    return path / "sticker.gif", (255, 255, 255)


def animated_gif_first_frame(path: Path) -> tuple:
    frames = [flat("RGB", RED), flat("RGB", (0, 0, 255))]
    frames[0].save(path / "anim.gif", save_all=True, append_images=frames[1:])
    return path / "anim.gif", RED


def greyscale_16_bit_tiff(path: Path) -> tuple:
    Image.fromarray(np.full((24, 24), 65535 // 2, np.uint16)).save(path / "deep.tiff")
    assert Image.open(path / "deep.tiff").mode.startswith("I;16")
    return path / "deep.tiff", (128, 128, 128)


def float_tiff_in_0_to_1(path: Path) -> tuple:
    Image.fromarray(np.full((24, 24), 0.5, np.float32), "F").save(path / "float.tif")
    return path / "float.tif", (128, 128, 128)  # PIL's own convert() makes this black


def cmyk_jpeg(path: Path) -> tuple:
    flat("CMYK", (0, 255, 255, 0)).save(path / "print.jpg", quality=95)
    return path / "print.jpg", RED


def cmyk_tiff(path: Path) -> tuple:
    flat("CMYK", (0, 255, 255, 0)).save(path / "print.tiff")
    return path / "print.tiff", RED


def bilevel_bmp(path: Path) -> tuple:
    flat("1", 1).save(path / "ink.bmp")
    return path / "ink.bmp", (255, 255, 255)


def exif_rotated_png(path: Path) -> tuple:
    # Stored 48 wide with red on the left; orientation 6 (rotate 90 clockwise to view): red on top.
    pixels = np.zeros((24, 48, 3), np.uint8)
    pixels[:, :24] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path / "phone.png", exif=exif)
    return path / "phone.png", None  # checked below: top row red, bottom row black


def tiny_one_pixel(path: Path) -> tuple:
    flat("RGB", RED, (1, 1)).save(path / "dot.png")
    return path / "dot.png", RED


CASES = [
    greyscale_png,
    greyscale_jpeg,
    rgba_webp_on_white,
    palette_gif_with_transparency,
    animated_gif_first_frame,
    greyscale_16_bit_tiff,
    float_tiff_in_0_to_1,
    cmyk_jpeg,
    cmyk_tiff,
    bilevel_bmp,
    exif_rotated_png,
    tiny_one_pixel,
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.decoder)
@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_every_kind_of_file_decodes_to_rgb(tmp_path: Path, case, spec):
    path, colour = case(tmp_path)
    check_image(path)
    out = decode_image(path, spec)
    assert (out.shape, out.dtype) == ((16, 16, 3), np.uint8)
    if colour is None:  # the EXIF case: rotated before the crop
        assert np.all(np.abs(out[0].astype(int) - RED) <= 2) and np.all(out[-1] <= 2)
        return
    assert np.all(np.abs(out.astype(int) - colour) <= 3), (out[0, 0], colour)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.decoder)
@pytest.mark.parametrize("shape", [(200_000, 1), (1, 200_000)])
def test_a_long_strip_is_cut_to_its_centre_before_resizing(tmp_path: Path, shape, spec, monkeypatch):
    """The shorter side goes to the resize side: a 1 x 200,000 px strip would become a
    16 x 3,200,000 px image before its centre is cut (a 1 x 40M one, 640M px). Only the
    centre reaches the crop, so it is cut first: the resize never sees more than MAX_ASPECT x."""
    width, height = shape
    pixels = np.zeros((height, width, 3), np.uint8)
    centre = (
        (slice(None), slice(width // 2 - 1, width // 2 + 2))
        if width > height
        else (slice(height // 2 - 1, height // 2 + 2), slice(None))
    )
    pixels[centre] = RED
    Image.fromarray(pixels).save(tmp_path / "strip.png")
    resized = []
    original = Image.Image.resize

    def watched(self, size, *args, **kwargs):
        resized.append(size)
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", watched)
    out = decode_image(tmp_path / "strip.png", spec)
    assert out.shape == (16, 16, 3)
    assert all(max(size) <= MAX_ASPECT * 16 for size in resized), resized
    assert np.all(np.abs(out[6:10, 6:10].astype(int) - RED) <= 3)  # the centre, not an edge


def test_the_extensions_listed_cover_what_users_have(tmp_path: Path):
    for extension in (".jpg", ".JPEG", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"):
        (tmp_path / f"a{extension}").write_bytes(b"")
    (tmp_path / "._a.jpg").write_bytes(b"")  # macOS metadata beside a copied file, not an image
    (tmp_path / "notes.txt").write_text("not an image")
    listed = [path.name for path in list_images(tmp_path)]
    assert len(listed) == 8 and "._a.jpg" not in listed and "notes.txt" not in listed
    assert {".gif", ".tif", ".tiff"} <= set(IMAGE_EXTENSIONS)


def test_an_unreadable_tiff_is_an_image_error_naming_it(tmp_path: Path):
    (tmp_path / "scan.tiff").write_bytes(b"II*\x00" + b"\x00" * 40)
    with pytest.raises(ImageError, match="scan.tiff"):
        check_image(tmp_path / "scan.tiff")
