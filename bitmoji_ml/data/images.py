"""THE image preprocessing: decode a file to RGB and resize it. Training, evaluation, export
parity and inference all call `decode_image`, so there is no second implementation to drift."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from bitmoji_ml.errors import BitmojiError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# 40 MP is far beyond any face photo; larger files are refused as decompression bombs before
# their pixels are decoded (PIL only reads the header on open).
MAX_PIXELS = 40_000_000
FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ORIENTATION_TAG = 0x0112  # EXIF Orientation
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(BitmojiError):
    """An image file that cannot be used: missing, corrupt, truncated, not an image, too large."""


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How a file becomes model input: shorter side to `resize`, centre crop to `size`.

    The model itself takes the resulting uint8 HWC RGB pixels; `mean`/`std` are applied inside
    the network, and are kept here so every checkpoint and ONNX file states them.
    """

    size: int = 64
    resize: int = 64
    filter: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.filter not in FILTERS:
            raise BitmojiError(f"unknown resize filter {self.filter!r}; use one of {list(FILTERS)}")
        if not 8 <= self.size <= self.resize:
            raise BitmojiError(f"bad preprocessing: size {self.size} must be 8..resize {self.resize}")

    def to_dict(self) -> dict:
        """Plain JSON-able form, stored in checkpoints and ONNX metadata."""
        return {**dataclasses.asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict) -> Preprocess:
        """Inverse of `to_dict` (also accepts the JSON string form)."""
        if isinstance(values, str):
            values = json.loads(values)
        return cls(
            size=int(values["size"]),
            resize=int(values["resize"]),
            filter=str(values["filter"]),
            mean=tuple(float(v) for v in values["mean"]),
            std=tuple(float(v) for v in values["std"]),
        )


def _open_checked(path: Path) -> Image.Image:
    """Open lazily (header only) and refuse bombs before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError as error:
        raise ImageError(f"{path}: file not found") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{path}: refused, too many pixels (decompression bomb?)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: not a readable image ({error})") from error
    width, height = image.size
    if width * height > MAX_PIXELS or width < 1 or height < 1:
        image.close()
        raise ImageError(f"{path}: refused, {width}x{height} pixels is over the {MAX_PIXELS} limit")
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode; transparent pixels become white, as a face sticker is shown."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: PIL's convert() clamps values at 255 (a 16-bit photo turns white);
        # scale 0..65535 to 0..255 instead. Older PIL opens such PNGs in mode "I" (32-bit).
        pixels = np.asarray(image, dtype=np.int64)
        grey = Image.fromarray(((np.clip(pixels, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8))
        transparent = image.info.get("transparency")
        if isinstance(transparent, int):
            alpha = Image.fromarray(np.where(pixels == transparent, 0, 255).astype(np.uint8))
            return _to_rgb(Image.merge("LA", (grey, alpha)))
        return grey.convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(path: str | Path | BinaryIO, spec: Preprocess) -> np.ndarray:
    """Decode `path` (or an open binary file) to a uint8 array of shape (size, size, 3): EXIF
    orientation applied, converted to RGB, shorter side resized to `spec.resize`, centre-cropped
    to `spec.size`."""
    path = Path(path) if isinstance(path, str | os.PathLike) else path
    image = _open_checked(path)
    try:
        with image:
            if image.format == "JPEG":
                # DCT-domain downscale: decodes at 1/2, 1/4 or 1/8 size when that still covers
                # the target, which is most of the decode cost saved. Releases the GIL.
                image.draft("RGB", (spec.resize, spec.resize))
            # exif_transpose copies the image even when there is nothing to rotate: ask first.
            if image.getexif().get(ORIENTATION_TAG, 1) != 1:
                image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
            width, height = image.size
            scale = spec.resize / min(width, height)
            new_size = (max(spec.resize, round(width * scale)), max(spec.resize, round(height * scale)))
            if new_size != image.size:
                image = image.resize(new_size, FILTERS[spec.filter])
            if new_size != (spec.size, spec.size):
                left = (new_size[0] - spec.size) // 2
                top = (new_size[1] - spec.size) // 2
                image = image.crop((left, top, left + spec.size, top + spec.size))
            return np.asarray(image, dtype=np.uint8)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"{path}: cannot decode ({error})") from error


class _ImageBytes(io.BytesIO):
    """In-memory image file; error messages call it "image bytes", not an object address."""

    def __repr__(self) -> str:
        return "image bytes"

    __str__ = __repr__


def decode_image_bytes(data: bytes, spec: Preprocess) -> np.ndarray:
    """`decode_image` for the bytes of an image file (a request body, a binary column)."""
    return decode_image(_ImageBytes(data), spec)


def check_image(path: str | Path) -> None:
    """Fully decode `path` once (catches truncated and corrupt files); raise ImageError if bad."""
    path = Path(path)
    image = _open_checked(path)
    try:
        with image:
            image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: cannot decode ({error})") from error
