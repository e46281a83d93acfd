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

try:  # libjpeg-turbo with DCT scaling to n/8, releases the GIL; a declared dependency
    import simplejpeg
except ImportError:  # pragma: no cover - an install without it can still use Pillow models
    simplejpeg = None

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# 40 MP is far beyond any face photo; larger files are refused as decompression bombs before
# their pixels are decoded (PIL only reads the header on open).
MAX_PIXELS = 40_000_000
# The centre crop keeps a square of the shorter side, so a longer side beyond MAX_ASPECT times the
# shorter is cut off before resizing: a 1 x 40M px strip must not be resized to 64 x 2.6G px.
MAX_ASPECT = 8
FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

JPEG_START = b"\xff\xd8"
ORIENTATION_TAG = 0x0112  # EXIF Orientation
# Image.transpose method per EXIF orientation, as ImageOps.exif_transpose applies them.
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# How pixels come out of a file. "pillow": Pillow for every format (models without a decoder
# field). "simplejpeg": libjpeg-turbo scales baseline/progressive YCbCr or grey JPEGs by n/8 while
# decoding; every other file (PNG, WebP, BMP, CMYK JPEG, anything it refuses) goes through Pillow.
DECODERS = ("pillow", "simplejpeg")
TURBO_COLORSPACES = ("YCbCr", "Gray")


def available_decoders() -> tuple[str, ...]:
    """The decoders this installation can run."""
    return tuple(name for name in DECODERS if name != "simplejpeg" or simplejpeg is not None)


class ImageError(BitmojiError):
    """An image file that cannot be used: missing, corrupt, truncated, not an image, too large."""


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How a file becomes model input: shorter side to `resize`, centre crop to `size`.

    The model itself takes the resulting uint8 HWC RGB pixels; `mean`/`std` are applied inside
    the network, and are kept here so every checkpoint and ONNX file states them. `decoder`
    names the decode the model was trained with (one of DECODERS); a model is only ever served
    with that decode, and one naming a decoder this build lacks is refused.
    """

    size: int = 64
    resize: int = 64
    filter: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    decoder: str = "pillow"

    def __post_init__(self) -> None:
        if self.decoder not in available_decoders():
            hint = "pip install simplejpeg" if self.decoder in DECODERS else "use a bitmoji-ml that has it"
            raise BitmojiError(
                f"decoder {self.decoder!r} is not available in this build (available: "
                f"{', '.join(available_decoders())}): the model was made with it and is never served "
                f"with another decode; {hint}, or retrain"
            )
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
            decoder=str(values.get("decoder", "pillow")),  # older models: Pillow
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
    if image.mode == "F":
        # 32-bit float (TIFF): values in 0..1 are the usual float convention, scaled to 0..255;
        # anything else is taken as 0..255 and clipped (PIL's convert() would clip 0..1 to black).
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if pixels.min() >= 0 and pixels.max() <= 1:
            pixels = pixels * 255
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(path: str | Path | BinaryIO, spec: Preprocess) -> np.ndarray:
    """Decode `path` (or an open binary file) to a uint8 array of shape (size, size, 3) with
    `spec.decoder`: EXIF orientation applied, converted to RGB, shorter side resized to
    `spec.resize`, centre-cropped to `spec.size`. Files the fast decoder does not take, and every
    error, go through Pillow, so formats, modes and error messages are the same for both."""
    path = Path(path) if isinstance(path, str | os.PathLike) else path
    if spec.decoder == "simplejpeg":
        pixels = _decode_jpeg_turbo(path, spec)
        if pixels is not None:
            return pixels
    return _decode_pillow(path, spec)


def _decode_pillow(path: Path | BinaryIO, spec: Preprocess) -> np.ndarray:
    """Pillow for every format; JPEGs are drafted (DCT-scaled) by 1/2, 1/4 or 1/8 when that
    still covers the target."""
    image = _open_checked(path)
    try:
        with image:
            if image.format == "JPEG":
                image.draft("RGB", (spec.resize, spec.resize))  # releases the GIL while decoding
            # exif_transpose copies the image even when there is nothing to rotate: ask first.
            if image.getexif().get(ORIENTATION_TAG, 1) != 1:
                image = ImageOps.exif_transpose(image)
            return _resize_and_crop(_to_rgb(image), spec)
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


def _jpeg_bytes(source: Path | BinaryIO) -> bytes | None:
    """The whole file when it starts like a JPEG; None (having read two bytes) otherwise."""
    if isinstance(source, Path):
        with open(source, "rb") as handle:
            start = handle.read(2)
            return start + handle.read() if start == JPEG_START else None
    position = source.tell()
    data = source.read()
    source.seek(position)  # Pillow reads it again when this decoder declines
    return data if data[:2] == JPEG_START else None


def _decode_jpeg_turbo(path: Path | BinaryIO, spec: Preprocess) -> np.ndarray | None:
    """A YCbCr or grey JPEG decoded by libjpeg-turbo at the smallest n/8 scale whose shorter side
    still covers `spec.resize` (128 -> 64 px exactly: no resize left); None for anything else
    (not a JPEG, CMYK, over MAX_PIXELS, unreadable, corrupt), which Pillow then handles."""
    try:
        data = _jpeg_bytes(path)
        if data is None:  # not a JPEG: Pillow's
            return None
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in TURBO_COLORSPACES or not 0 < width * height <= MAX_PIXELS:
            return None
        orientation = _jpeg_orientation(data)
        # Both sides >= resize is the shorter side >= resize, before or after a rotation.
        pixels = simplejpeg.decode_jpeg(data, "rgb", min_width=spec.resize, min_height=spec.resize)
    except (OSError, SyntaxError, ValueError):
        return None
    if orientation == 1 and pixels.shape[:2] == (spec.resize, spec.resize):
        # DCT scaling reached the resize side exactly: only the centre crop is left, the same
        # square _resize_and_crop would cut, without a round trip through Pillow.
        start = (spec.resize - spec.size) // 2
        return np.ascontiguousarray(pixels[start : start + spec.size, start : start + spec.size])
    image = Image.fromarray(pixels)
    if orientation != 1:
        image = image.transpose(ORIENTATION_TRANSPOSE[orientation])
    return _resize_and_crop(image, spec)


def _jpeg_orientation(data: bytes) -> int:
    """EXIF orientation of JPEG bytes (1 when there is no EXIF block or no valid tag)."""
    if data.find(b"Exif\x00\x00", 0, 1 << 16) < 0:
        return 1
    with Image.open(io.BytesIO(data)) as image:  # header only: the pixels are not decoded
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    return orientation if orientation in ORIENTATION_TRANSPOSE else 1


def _resize_and_crop(image: Image.Image, spec: Preprocess) -> np.ndarray:
    """Shorter side to `spec.resize` with the spec's filter, then the centre `spec.size` square."""
    width, height = image.size
    keep = MAX_ASPECT * min(width, height)
    if max(width, height) > keep:  # only the centre of a long strip can reach the crop
        left, top = (width - min(width, keep)) // 2, (height - min(height, keep)) // 2
        image = image.crop((left, top, left + min(width, keep), top + min(height, keep)))
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


def check_image(path: str | Path) -> None:
    """Fully decode `path` once (catches truncated and corrupt files); raise ImageError if bad."""
    path = Path(path)
    image = _open_checked(path)
    try:
        with image:
            image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: cannot decode ({error})") from error
