"""The decoders behind `decode_image`: the simplejpeg decoder gives Pillow's pixels where both
scale a JPEG by a power of two, handles every other file through Pillow with Pillow's errors,
applies EXIF orientation the same way, and is recorded in checkpoints and ONNX metadata; a model
naming a decoder this build lacks is refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import face
from PIL import Image
from random_model import export_network
from typer.testing import CliRunner

import cli
from bitmoji_ml.checkpoints import model_from_checkpoint
from bitmoji_ml.data import images
from bitmoji_ml.data.images import DECODERS, ImageError, Preprocess, decode_image
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import DEFAULT_MODEL, create_model, model_spec
from bitmoji_ml.serving.onnx_model import META_PREPROCESS, OnnxModel

PILLOW = Preprocess(size=64, resize=64)
TURBO = Preprocess(size=64, resize=64, decoder="simplejpeg")
runner = CliRunner()


def jpeg(path: Path, side: int = 128, seed: int = 0, **options) -> Path:
    face(seed % 2, np.random.default_rng(seed), side).save(path, quality=90, **options)
    return path


def test_decoder_names():
    assert DECODERS == ("pillow", "simplejpeg")
    assert Preprocess().decoder == "pillow"
    assert model_spec(DEFAULT_MODEL).preprocess.decoder == "simplejpeg"
    assert model_spec("compact").preprocess.decoder == "pillow"  # today's model keeps its decode


@pytest.mark.parametrize("side", [128, 256, 512, 64])  # scales 1/2, 1/4, 1/8 and 1
def test_simplejpeg_gives_pillows_pixels_at_power_of_two_scales(tmp_path: Path, side: int):
    path = jpeg(tmp_path / "face.jpg", side)
    turbo = decode_image(path, TURBO)
    assert turbo.shape == (64, 64, 3) and turbo.dtype == np.uint8
    np.testing.assert_array_equal(turbo, decode_image(path, PILLOW))


@pytest.mark.parametrize("side", [128, 64])  # DCT scaling to the resize side, or none needed
def test_simplejpeg_centre_crop_gives_pillows_pixels(tmp_path: Path, side: int):
    path = jpeg(tmp_path / "face.jpg", side)
    cropped = Preprocess(size=60, resize=64, decoder="simplejpeg")
    turbo = decode_image(path, cropped)
    assert turbo.shape == (60, 60, 3) and turbo.flags.c_contiguous
    np.testing.assert_array_equal(turbo, decode_image(path, dataclasses.replace(cropped, decoder="pillow")))
    np.testing.assert_array_equal(turbo, decode_image(path, TURBO)[2:62, 2:62])


def test_simplejpeg_decodes_jpegs_itself_and_other_files_through_pillow(tmp_path: Path, monkeypatch):
    calls: list[Path] = []
    pillow = images._decode_pillow

    def spy(path: Path, spec: Preprocess) -> np.ndarray:
        calls.append(path)
        return pillow(path, spec)

    monkeypatch.setattr(images, "_decode_pillow", spy)
    rng = np.random.default_rng(0)
    face(1, rng, 100).save(tmp_path / "odd.jpg", quality=90)  # 100 -> 75 px (6/8): Pillow can't
    face(1, rng, 100).convert("L").save(tmp_path / "gray.jpg", quality=90)
    face(1, rng).save(tmp_path / "face.png")
    face(1, rng).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=90)
    for name in ("odd.jpg", "gray.jpg"):
        assert decode_image(tmp_path / name, TURBO).shape == (64, 64, 3)
    assert calls == []
    for name in ("face.png", "cmyk.jpg"):
        np.testing.assert_array_equal(decode_image(tmp_path / name, TURBO), pillow(tmp_path / name, PILLOW))
    assert calls == [tmp_path / "face.png", tmp_path / "cmyk.jpg"]
    gray = decode_image(tmp_path / "gray.jpg", TURBO)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_simplejpeg_at_other_scales_is_close_to_pillow(tmp_path: Path):
    # 100 px: libjpeg-turbo decodes at 6/8 (75 px) and resizes; Pillow decodes 100 px and resizes.
    path = jpeg(tmp_path / "face.jpg", 100)
    difference = decode_image(path, TURBO).astype(int) - decode_image(path, PILLOW)
    assert np.abs(difference).mean() < 4


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_same_as_pillow(tmp_path: Path, orientation: int):
    pixels = np.zeros((64, 128, 3), np.uint8)  # 128 wide: four coloured quarters, left to right
    for index, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        pixels[:, index * 32 : (index + 1) * 32] = colour
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    spec = dataclasses.replace(TURBO, size=16, resize=16)
    np.testing.assert_array_equal(
        decode_image(path, spec), decode_image(path, Preprocess(size=16, resize=16))
    )


def broken(folder: Path) -> dict[str, Path]:
    data = jpeg(folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image\n")
    (folder / "soi-only.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    (folder / "folder.jpg").mkdir()
    names = ["truncated", "empty", "text", "soi-only", "folder", "missing"]
    return {name: folder / f"{name}.jpg" for name in names}


def error_text(path: Path, spec: Preprocess) -> str:
    with pytest.raises(ImageError) as raised:
        decode_image(path, spec)
    return str(raised.value)


def test_broken_files_give_the_same_errors_with_either_decoder(tmp_path: Path):
    for name, path in broken(tmp_path).items():
        message = error_text(path, TURBO)
        assert path.name in message, (name, message)
        assert message == error_text(path, PILLOW), name


def test_oversized_jpeg_is_refused_by_either_decoder(tmp_path: Path, monkeypatch):
    path = jpeg(tmp_path / "big.jpg", 128)
    monkeypatch.setattr(images, "MAX_PIXELS", 128 * 128 - 1)
    message = error_text(path, TURBO)
    assert "refused" in message and message == error_text(path, PILLOW)


# --------------------------------------------------------------------------------------------
# The decoder travels with the model, and an unknown one is refused


def test_preprocess_records_the_decoder_and_old_entries_mean_pillow():
    assert Preprocess.from_dict(TURBO.to_dict()) == TURBO
    assert json.loads(json.dumps(TURBO.to_dict()))["decoder"] == "simplejpeg"
    old = {key: value for key, value in PILLOW.to_dict().items() if key != "decoder"}
    assert Preprocess.from_dict(old).decoder == "pillow"


def test_unknown_decoder_is_refused():
    with pytest.raises(BitmojiError, match=r"decoder 'nvjpeg' is not available.*pillow, simplejpeg"):
        Preprocess(decoder="nvjpeg")
    with pytest.raises(BitmojiError, match="nvjpeg"):
        Preprocess.from_dict({**PILLOW.to_dict(), "decoder": "nvjpeg"})


def test_missing_simplejpeg_is_refused_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(images, "simplejpeg", None)
    assert images.available_decoders() == ("pillow",)
    with pytest.raises(BitmojiError, match="pip install simplejpeg"):
        Preprocess(decoder="simplejpeg")
    assert Preprocess().decoder == "pillow"  # Pillow models still load


@pytest.fixture(scope="module")
def turbo_export(tmp_path_factory) -> tuple[Path, Path]:
    """A random-weights default model (simplejpeg decoder) saved and exported without MLflow."""
    torch.manual_seed(0)
    return export_network(tmp_path_factory.mktemp("turbo-export"), create_model(DEFAULT_MODEL).eval())


def test_export_records_the_decoder_and_stays_under_1_mb(turbo_export):
    checkpoint, output = turbo_export
    assert output.stat().st_size < 1_000_000
    assert OnnxModel.load(output, threads=1).preprocess.decoder == "simplejpeg"
    _, preprocess = model_from_checkpoint(torch.load(checkpoint, weights_only=True))
    assert preprocess.decoder == "simplejpeg"


def test_model_naming_an_unknown_decoder_is_refused(turbo_export, tmp_path: Path):
    checkpoint, output = turbo_export
    model = onnx.load(str(output))
    (entry,) = [entry for entry in model.metadata_props if entry.key == META_PREPROCESS]
    entry.value = json.dumps({**json.loads(entry.value), "decoder": "nvjpeg"})
    alien = tmp_path / "alien.onnx"
    onnx.save(model, str(alien))
    with pytest.raises(BitmojiError, match=r"alien.onnx: decoder 'nvjpeg' is not available"):
        OnnxModel.load(alien)
    (tmp_path / "images").mkdir()
    jpeg(tmp_path / "images" / "a.jpg")
    result = runner.invoke(cli.app, ["predict", str(tmp_path / "images"), "--model", str(alien)])
    assert result.exit_code == 1
    assert "decoder 'nvjpeg' is not available" in result.stderr
    payload = torch.load(checkpoint, weights_only=True)
    payload["preprocess"] = {**payload["preprocess"], "decoder": "nvjpeg"}
    with pytest.raises(BitmojiError, match="nvjpeg"):
        model_from_checkpoint(payload)
