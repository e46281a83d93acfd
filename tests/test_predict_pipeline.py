"""The decode pipeline behind `bitmoji predict`: batches come back in input order with bad files
marked in place, the fast decoder skips exactly the files (and prints exactly the warnings) the
Pillow decoder does, stopping early or Ctrl-C cancels queued work and leaves no decode thread,
and onnxruntime gets its thread settings."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import face
from random_model import export_network
from typer.testing import CliRunner

import cli
from bitmoji_ml.data.images import Preprocess, decode_image
from bitmoji_ml.models import DEFAULT_MODEL, create_model, model_spec
from bitmoji_ml.serving import folder_engine
from bitmoji_ml.serving.folder_engine import find_images, ordered_batches, predict_paths
from bitmoji_ml.serving.onnx_model import OnnxModel

runner = CliRunner()
BAD = {"03-truncated.jpg", "07-empty.jpg", "11-text.jpg", "12-corrupt.png"}


def write_folder(folder: Path, count: int = 16) -> list[Path]:
    """JPEGs and PNGs of several sizes with the BAD files in between; returns them sorted."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for index in range(count):
        face(index % 2, rng, (128, 100, 64)[index % 3]).save(folder / f"{index:02d}-good.jpg", quality=90)
    face(1, rng).save(folder / "05-face.png")
    data = (folder / "00-good.jpg").read_bytes()
    (folder / "03-truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "07-empty.jpg").write_bytes(b"")
    (folder / "11-text.jpg").write_text("not an image\n")
    (folder / "12-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    return find_images(folder)


@pytest.mark.parametrize("decoder", ["pillow", "simplejpeg"])
def test_batches_keep_input_order_and_mark_bad_files_in_place(tmp_path: Path, decoder: str):
    paths = write_folder(tmp_path / "images")
    spec = Preprocess(size=32, resize=32, decoder=decoder)
    seen, errors, images = [], [], []
    for chunk, (batch, chunk_errors) in ordered_batches(paths, 3, 4, folder_engine._decode_batch, spec):
        assert len(chunk) == len(batch) == len(chunk_errors) <= 3
        seen += chunk
        errors += chunk_errors
        images += list(batch)
    assert seen == paths
    assert [path.name for path, error in zip(paths, errors, strict=True) if error] == sorted(BAD)
    for path, error, image in zip(paths, errors, images, strict=True):
        if error is None:
            np.testing.assert_array_equal(image, decode_image(path, spec))
        else:
            assert path.name in error


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The same random-weights default network exported with each decoder."""
    folder = tmp_path_factory.mktemp("pipeline-models")
    torch.manual_seed(0)
    network = create_model(DEFAULT_MODEL).eval()
    exported = {}
    for decoder in ("pillow", "simplejpeg"):
        preprocess = dataclasses.replace(model_spec(DEFAULT_MODEL).preprocess, decoder=decoder)
        exported[decoder] = export_network(folder, network, name=decoder, preprocess=preprocess)[1]
    return exported


def predict(folder: Path, model: Path, output: Path, *extra: str):
    return runner.invoke(
        cli.app, ["predict", str(folder), "--model", str(model), "--output", str(output), *extra]
    )


def test_fast_decoder_skips_and_warns_exactly_like_pillow(models, tmp_path: Path):
    write_folder(tmp_path / "images")
    results = {
        decoder: predict(tmp_path / "images", model, tmp_path / f"{decoder}.csv")
        for decoder, model in models.items()
    }
    warnings = {
        decoder: [line for line in result.stderr.splitlines() if line.startswith("warning")]
        for decoder, result in results.items()
    }
    assert len(warnings["simplejpeg"]) == len(BAD)
    assert warnings["simplejpeg"] == warnings["pillow"]
    for decoder, result in results.items():
        assert result.exit_code == 0, result.output
        assert f"{len(BAD)} skipped" in result.stdout
        ids = [line.split(",")[0] for line in (tmp_path / f"{decoder}.csv").read_text().splitlines()[1:]]
        assert ids == sorted(path.name for path in (tmp_path / "images").iterdir() if path.name not in BAD)
    strict = predict(tmp_path / "images", models["simplejpeg"], tmp_path / "strict.csv", "--strict")
    assert strict.exit_code == 1
    assert f"--strict: {len(BAD)} file(s) could not be read" in strict.stderr


def decode_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("bitmoji-decode")]


@pytest.fixture
def counted_decodes(monkeypatch) -> list[int]:
    """Count the batches whose decoding started; every batch after the first is held back
    for 0.5 s, so the ones queued behind it are still waiting when the consumer stops."""
    started: list[int] = []
    decode = folder_engine._decode_batch

    def counting(paths, spec):
        started.append(len(paths))
        if len(started) > 1:
            threading.Event().wait(0.5)
        return decode(paths, spec)

    monkeypatch.setattr(folder_engine, "_decode_batch", counting)
    return started


def test_stopping_early_cancels_queued_batches_and_ends_the_threads(tmp_path: Path, counted_decodes):
    paths = write_folder(tmp_path / "images") * 5  # 105 files, 35 batches of 3
    batches = ordered_batches(paths, 3, 1, folder_engine._decode_batch, Preprocess(size=16, resize=16))
    next(batches)  # batch 1 is being decoded now and batches 2 and 3 are queued behind it
    batches.close()
    assert decode_threads() == []
    assert len(counted_decodes) <= 2  # the queued batches were cancelled, not decoded


def test_ctrl_c_during_inference_stops_decoding_and_leaves_no_threads(
    models, tmp_path: Path, counted_decodes, monkeypatch
):
    paths = write_folder(tmp_path / "images") * 5
    model = OnnxModel.load(models["simplejpeg"], threads=1)

    def interrupted(images: np.ndarray) -> np.ndarray:
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict_paths(model, paths, batch_size=3, workers=1)
    assert decode_threads() == []
    assert len(counted_decodes) <= 2


def test_onnxruntime_thread_settings(models):
    options = OnnxModel.load(models["simplejpeg"], threads=1).session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
