"""`bitmoji predict`: onnxruntime predictions equal PyTorch's, the CSV and Kaggle outputs, every
bad input, recursive mode, exit codes, and that neither torch nor MLflow is imported. One
checkpoint is exported once per module (no MLflow needed) and shared by the tests."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import ROOT, face
from onnx import TensorProto, helper
from PIL import Image
from typer.testing import CliRunner

import cli
from bitmoji_ml.checkpoints import save_checkpoint
from bitmoji_ml.data import images as images_module
from bitmoji_ml.data.images import Preprocess, decode_image
from bitmoji_ml.export.job import export_job
from bitmoji_ml.models import create_model
from bitmoji_ml.models.normalize import Classifier

BITMOJI = Path(sys.executable).with_name("bitmoji")
TOLERANCE = 1e-5
GOOD = [
    "a.jpg",
    "B.JPG",
    "C.PNG",
    "d.webp",
    "e.bmp",
    "f.jpeg",
    "gray.png",
    "rgba.png",
    "palette.png",
    "cmyk.jpg",
    "exif.jpg",
    "with, comma.png",
    'with "quotes", and a comma.png',
]
BAD = ["corrupt.png", "truncated.jpg", "zero.jpg", "text.jpg"]

runner = CliRunner()


@dataclasses.dataclass
class Exported:
    onnx: Path
    checkpoint: Path
    model: Classifier
    preprocess: Preprocess


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Exported:
    """Seeded random weights with a sharpened last layer (so probabilities spread over both
    classes instead of sitting at one value), saved and exported without MLflow."""
    torch.manual_seed(7)
    preprocess = Preprocess(size=64, resize=64)
    model = create_model("compact", preprocess).eval()
    rng = np.random.default_rng(123)
    calibration = torch.from_numpy(np.stack([np.asarray(face(i % 2, rng, 64)) for i in range(15)]))
    last = model.net[-1]
    with torch.no_grad():
        last.weight.mul_(300)
        logits = model(calibration)
        last.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    folder = tmp_path_factory.mktemp("predict-model")
    checkpoint = folder / "model.pt"
    save_checkpoint(
        checkpoint,
        model,
        model="compact",
        preprocess=preprocess.to_dict(),
        epoch=0,
        metrics={"val_acc": 0.5},
        config={"model": "compact"},
    )
    output = folder / "bitmoji.onnx"
    export_job(output=output, checkpoint=checkpoint, register=False, lists_dir=None)
    return Exported(output, checkpoint, model, preprocess)


# --------------------------------------------------------------------------------------------
# Files made by the tests


def write_good_images(folder: Path, seed: int = 0) -> list[str]:
    """One file per supported kind; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    face(1, rng).save(folder / "a.jpg", quality=95)
    face(0, rng, 80).save(folder / "B.JPG", quality=90)
    face(1, rng).save(folder / "C.PNG")
    face(0, rng).save(folder / "d.webp", quality=90)
    face(1, rng).save(folder / "e.bmp")
    face(0, rng).resize((96, 64)).save(folder / "f.jpeg")  # not square: centre crop
    face(1, rng).convert("L").save(folder / "gray.png")
    rgba = face(0, rng).convert("RGBA")
    alpha = np.full((48, 48), 255, dtype=np.uint8)
    alpha[:, :12] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "rgba.png")
    palette = face(1, rng).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    palette.save(folder / "palette.png", transparency=0)
    face(0, rng).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    face(1, rng).resize((72, 48)).save(folder / "exif.jpg", quality=95, exif=exif)
    face(0, rng).save(folder / "with, comma.png")
    face(1, rng).save(folder / 'with "quotes", and a comma.png')
    (folder / "notes.txt").write_text("not an image extension: ignored, not skipped\n")
    assert Image.open(folder / "cmyk.jpg").mode == "CMYK"
    assert Image.open(folder / "palette.png").mode == "P"
    return list(GOOD)


def write_bad_images(folder: Path) -> list[str]:
    """Corrupt, truncated, zero-byte and not-an-image files with image extensions."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    face(1, rng).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # garbage in the compressed pixels: CRC/zlib error
    (folder / "corrupt.png").write_bytes(bytes(data))
    buffer = io.BytesIO()
    face(0, rng, 96).save(buffer, format="JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is a text file with a .jpg name\n")
    return list(BAD)


def predict(*args: str | Path):
    return runner.invoke(cli.app, ["predict", *map(str, args)])


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def torch_prob(exported: Exported, path: Path) -> float:
    pixels = decode_image(path, exported.preprocess)[None].copy()
    with torch.no_grad():
        logits = exported.model(torch.from_numpy(pixels))
    return float(torch.softmax(logits, dim=1)[0, 1])


def assert_rows_match_pytorch(exported: Exported, folder: Path, rows: list[dict[str, str]]) -> None:
    for row in rows:
        prob = float(row["prob_male"])
        expected = torch_prob(exported, folder / row["image_id"])
        assert abs(prob - expected) <= TOLERANCE, (row, expected)
        assert row["is_male"] == ("1" if prob >= 0.5 else "-1"), row
        if abs(expected - 0.5) > TOLERANCE:
            assert row["is_male"] == ("1" if expected >= 0.5 else "-1"), (row, expected)


def error_of(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr  # after any per-file warnings
    return last


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning")]


# --------------------------------------------------------------------------------------------
# Predictions


def test_predictions_equal_pytorch_for_every_kind_of_image(exported: Exported, tmp_path: Path):
    folder = tmp_path / "images"
    names = write_good_images(folder)
    output = tmp_path / "predictions.csv"
    result = predict(folder, "--model", exported.onnx, "--output", output, "--batch-size", 5)
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == []
    header, rows = read_csv(output)
    assert header == ["image_id", "is_male", "prob_male"]
    assert [row["image_id"] for row in rows] == sorted(names)
    assert_rows_match_pytorch(exported, folder, rows)
    assert {row["is_male"] for row in rows} == {"1", "-1"}, "the test model should predict both classes"
    assert f"{len(names)} images" in result.stdout
    assert "0 skipped" in result.stdout
    assert str(output) in result.stdout
    text = output.read_text()
    assert '"with, comma.png"' in text  # quoted, and read back intact above
    assert '"with ""quotes"", and a comma.png"' in text


def test_bad_files_are_skipped_with_one_warning_each(exported: Exported, tmp_path: Path):
    folder = tmp_path / "images"
    good = write_good_images(folder)
    bad = write_bad_images(folder)
    output = tmp_path / "predictions.csv"
    # Batches of 3 mix good and bad files: the kept predictions must stay with their files.
    result = predict(folder, "--model", exported.onnx, "--output", output, "--batch-size", 3)
    assert result.exit_code == 0, result.output
    warnings = warnings_of(result)
    assert len(warnings) == len(bad), warnings
    for name in bad:
        assert sum(name in line for line in warnings) == 1, (name, warnings)
    assert f"{len(good)} images" in result.stdout
    assert f"{len(bad)} skipped" in result.stdout
    _, rows = read_csv(output)
    assert [row["image_id"] for row in rows] == sorted(good)
    assert_rows_match_pytorch(exported, folder, rows)


def test_strict_fails_when_a_file_is_skipped_and_writes_nothing(exported: Exported, tmp_path: Path):
    folder = tmp_path / "images"
    write_good_images(folder)
    write_bad_images(folder)
    output = tmp_path / "p.csv"
    result = predict(folder, "--model", exported.onnx, "--output", output, "--strict")
    assert not output.exists()
    assert f"--strict: 4 file(s) could not be read; {output} was not written" in error_of(result)
    assert len(warnings_of(result)) == 4
    output.write_text("the previous predictions\n")
    result = predict(folder, "--model", exported.onnx, "--output", output, "--strict", "--kaggle")
    assert "--strict" in error_of(result)
    assert output.read_text() == "the previous predictions\n"
    clean = tmp_path / "clean"
    write_good_images(clean)
    result = predict(clean, "--model", exported.onnx, "--output", tmp_path / "q.csv", "--strict")
    assert result.exit_code == 0, result.output


def test_on_batch_reports_every_file_once_per_batch(exported: Exported, tmp_path: Path):
    """The progress callback of predict_paths: one call per batch, skipped files included."""
    from bitmoji_ml.serving.folder_engine import find_images, predict_paths
    from bitmoji_ml.serving.onnx_model import OnnxModel

    folder = tmp_path / "images"
    write_good_images(folder)
    write_bad_images(folder)
    paths = find_images(folder)
    counts: list[int] = []
    result = predict_paths(OnnxModel.load(exported.onnx, 1), paths, 5, 1, on_batch=counts.append)
    assert counts == [5] * (len(paths) // 5) + ([len(paths) % 5] if len(paths) % 5 else [])
    assert len(result.paths) + len(result.skipped) == len(paths)


def test_nothing_readable_is_an_error_and_keeps_the_old_output(exported: Exported, tmp_path: Path):
    folder = tmp_path / "broken"
    write_bad_images(folder)
    output = tmp_path / "p.csv"
    output.write_text("old content\n")
    result = predict(folder, "--model", exported.onnx, "--output", output)
    assert "none of the 4 image file(s)" in error_of(result)
    assert output.read_text() == "old content\n"


def test_decompression_bomb_is_refused_and_skipped(exported: Exported, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(images_module, "MAX_PIXELS", 100 * 100)
    folder = tmp_path / "images"
    folder.mkdir()
    face(1, np.random.default_rng(0)).save(folder / "small.png")  # 48x48
    Image.new("RGB", (400, 300), (200, 90, 110)).save(folder / "huge.png")
    output = tmp_path / "p.csv"
    result = predict(folder, "--model", exported.onnx, "--output", output)
    assert result.exit_code == 0, result.output
    (warning,) = warnings_of(result)
    assert "huge.png" in warning and "refused" in warning
    assert "1 images" in result.stdout and "1 skipped" in result.stdout
    _, rows = read_csv(output)
    assert [row["image_id"] for row in rows] == ["small.png"]


# --------------------------------------------------------------------------------------------
# Kaggle submissions


def write_template(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "is_male"])
        writer.writerows((image_id, -1) for image_id in ids)


@pytest.fixture
def kaggle_folder(tmp_path: Path) -> tuple[Path, list[str]]:
    """testimages/ of generated faces; sample_submission.csv beside it lists all but one of
    them in a shuffled order."""
    folder = tmp_path / "bitmoji" / "testimages"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = [f"{index:04d}.jpg" for index in range(11)] + ['0011, "odd".jpg']  # CSV needs quoting
    for index, name in enumerate(names):
        face(index % 2, rng).save(folder / name, quality=95)
    ids = [names[i] for i in rng.permutation(len(names))][:-1]
    assert ids != sorted(ids)
    write_template(folder.parent / "sample_submission.csv", ids)
    return folder, ids


def test_kaggle_submission_follows_the_template(exported: Exported, kaggle_folder, tmp_path: Path):
    folder, ids = kaggle_folder
    submission = tmp_path / "submission.csv"
    result = predict(folder, "--model", exported.onnx, "--output", submission, "--kaggle")
    assert result.exit_code == 0, result.output
    lines = submission.read_text().splitlines()
    assert lines[0] == "image_id,is_male"
    header, rows = read_csv(submission)
    assert header == ["image_id", "is_male"]
    assert [row["image_id"] for row in rows] == ids  # template order; the extra image left out
    full = tmp_path / "full.csv"
    assert predict(folder, "--model", exported.onnx, "--output", full).exit_code == 0
    by_id = {row["image_id"]: row for row in read_csv(full)[1]}
    assert_rows_match_pytorch(exported, folder, list(by_id.values()))
    for row in rows:
        assert row["is_male"] == by_id[row["image_id"]]["is_male"]


def test_kaggle_template_beside_the_current_folder(
    exported: Exported, kaggle_folder, tmp_path: Path, monkeypatch
):
    """`cd testimages && bitmoji predict . --kaggle`: the parent of '.' is the real parent."""
    folder, ids = kaggle_folder
    monkeypatch.chdir(folder)
    submission = tmp_path / "submission.csv"
    result = predict(".", "--model", exported.onnx, "--output", submission, "--kaggle")
    assert result.exit_code == 0, result.output
    assert [row["image_id"] for row in read_csv(submission)[1]] == ids


def test_kaggle_template_option(exported: Exported, kaggle_folder, tmp_path: Path):
    folder, ids = kaggle_folder
    template = tmp_path / "elsewhere" / "my_template.csv"
    order = list(reversed(ids))
    write_template(template, order)
    submission = tmp_path / "submission.csv"
    result = predict(
        folder, "--model", exported.onnx, "--output", submission, "--kaggle", "--template", template
    )
    assert result.exit_code == 0, result.output
    assert [row["image_id"] for row in read_csv(submission)[1]] == order


def test_kaggle_missing_id_fails_and_writes_nothing(exported: Exported, kaggle_folder, tmp_path: Path):
    folder, ids = kaggle_folder
    write_template(folder.parent / "sample_submission.csv", [*ids, "missing-face.jpg"])
    submission = tmp_path / "submission.csv"
    result = predict(folder, "--model", exported.onnx, "--output", submission, "--kaggle")
    message = error_of(result)
    assert "missing-face.jpg" in message and "no prediction" in message
    assert not submission.exists()
    # Written atomically: an existing file keeps its old content.
    submission.write_text("previous submission\n")
    result = predict(folder, "--model", exported.onnx, "--output", submission, "--kaggle")
    assert result.exit_code == 1
    assert submission.read_text() == "previous submission\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_kaggle_without_template(exported: Exported, tmp_path: Path):
    folder = tmp_path / "alone" / "images"
    write_good_images(folder)
    submission = tmp_path / "submission.csv"
    message = error_of(predict(folder, "--model", exported.onnx, "--output", submission, "--kaggle"))
    assert "sample_submission.csv" in message and "--template" in message
    assert not submission.exists()


# --------------------------------------------------------------------------------------------
# Folders, models and exit codes


def test_empty_and_missing_folders(exported: Exported, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    output = tmp_path / "p.csv"
    assert "no images" in error_of(predict(empty, "--model", exported.onnx, "--output", output))
    missing = tmp_path / "missing"
    assert "not a folder" in error_of(predict(missing, "--model", exported.onnx, "--output", output))
    assert not output.exists()


def float_input_model(path: Path, elem_type: int, side: int, metadata: bool = True) -> Path:
    """A tiny hand-built ONNX graph: images [N, side, side, 3] -> prob_male [N]."""
    images = helper.make_tensor_value_info("images", elem_type, ["batch", side, side, 3])
    prob = helper.make_tensor_value_info("prob_male", TensorProto.FLOAT, ["batch"])
    cast = helper.make_node("Cast", ["images"], ["as_float"], to=TensorProto.FLOAT)
    mean = helper.make_node("ReduceMean", ["as_float", "axes"], ["prob_male"], keepdims=0)
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    graph = helper.make_graph([cast, mean], "toy", [images], [prob], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    if metadata:
        helper.set_model_props(model, {"bitmoji.preprocess": json.dumps(Preprocess().to_dict())})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "kind, fragment",
    [
        ("float input", "input does not match"),
        ("wrong size", "does not match its metadata"),
        ("no metadata", "export-onnx"),
        ("not onnx", "not a loadable ONNX model"),
        ("missing", "export-onnx"),
    ],
)
def test_unusable_model_files(tmp_path: Path, kind: str, fragment: str):
    folder = tmp_path / "images"
    write_good_images(folder)
    model = tmp_path / "model.onnx"
    if kind == "float input":
        float_input_model(model, TensorProto.FLOAT, 64)
    elif kind == "wrong size":
        float_input_model(model, TensorProto.UINT8, 32)
    elif kind == "no metadata":
        float_input_model(model, TensorProto.UINT8, 64, metadata=False)
    elif kind == "not onnx":
        model.write_text("definitely not protobuf")
    output = tmp_path / "p.csv"
    message = error_of(predict(folder, "--model", model, "--output", output))
    assert fragment in message and str(model) in message
    assert not output.exists()


def test_hand_built_model_is_usable_when_it_matches(tmp_path: Path):
    """The mismatch cases above fail for the stated reason: the same graph with a uint8 input
    of the right size runs."""
    folder = tmp_path / "images"
    names = write_good_images(folder)
    model = float_input_model(tmp_path / "model.onnx", TensorProto.UINT8, 64)
    output = tmp_path / "p.csv"
    result = predict(folder, "--model", model, "--output", output)
    assert result.exit_code == 0, result.output
    assert len(read_csv(output)[1]) == len(names)


def test_exit_codes(exported: Exported, tmp_path: Path):
    folder = tmp_path / "images"
    write_good_images(folder)
    usage = runner.invoke(cli.app, ["predict"])
    assert usage.exit_code == 2  # click's usage error: FOLDER missing
    output = tmp_path / "p.csv"
    bad_batch = predict(folder, "--model", exported.onnx, "--output", output, "--batch-size", 0)
    assert "--batch-size" in error_of(bad_batch)
    assert not output.exists()
    assert predict(folder, "--model", exported.onnx, "--output", output).exit_code == 0


# --------------------------------------------------------------------------------------------
# Recursive mode


def nested_folder(root: Path) -> Path:
    rng = np.random.default_rng(4)
    (root / "sub" / "deeper").mkdir(parents=True)
    face(1, rng).save(root / "top.jpg", quality=95)
    face(0, rng).save(root / "sub" / "mid.png")
    face(1, rng).save(root / "sub" / "deeper" / "low.JPG", quality=95)
    os.symlink(root, root / "sub" / "loop")  # a link back up: following it naively never ends
    return root


def test_without_recursive_sub_folders_are_ignored(exported: Exported, tmp_path: Path):
    folder = nested_folder(tmp_path / "nested")
    output = tmp_path / "p.csv"
    result = predict(folder, "--model", exported.onnx, "--output", output)
    assert result.exit_code == 0, result.output
    assert [row["image_id"] for row in read_csv(output)[1]] == ["top.jpg"]


def test_recursive_finds_sub_folders_once_despite_a_link_loop(exported: Exported, tmp_path: Path):
    folder = nested_folder(tmp_path / "nested")
    output = tmp_path / "p.csv"
    command = [str(BITMOJI), "predict", str(folder), "--model", str(exported.onnx)]
    result = subprocess.run(
        [*command, "--output", str(output), "--recursive"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    _, rows = read_csv(output)
    assert sorted(row["image_id"] for row in rows) == ["sub/deeper/low.JPG", "sub/mid.png", "top.jpg"]
    assert_rows_match_pytorch(exported, folder, rows)
    assert "3 images" in result.stdout


# --------------------------------------------------------------------------------------------
# The executable and the import check

NO_HEAVY_IMPORTS = textwrap.dedent(
    """
    import sys

    from typer.testing import CliRunner

    import cli

    folder, model, output = sys.argv[1:4]
    result = CliRunner().invoke(cli.app, ["predict", folder, "--model", model, "--output", output])
    assert result.exit_code == 0, result.output
    heavy = {"torch", "torchvision", "mlflow", "ray", "pyspark"}
    loaded = sorted({name.split(".")[0] for name in sys.modules} & heavy)
    print("loaded:", loaded)
    """
)


def test_predict_does_not_import_torch_or_mlflow(exported: Exported, tmp_path: Path):
    folder = tmp_path / "images"
    write_good_images(folder)
    output = tmp_path / "p.csv"
    result = subprocess.run(
        [sys.executable, "-c", NO_HEAVY_IMPORTS, str(folder), str(exported.onnx), str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded: []" in result.stdout, result.stdout
    assert len(read_csv(output)[1]) == len(GOOD)


def test_installed_executable(exported: Exported, tmp_path: Path):
    assert BITMOJI.is_file(), f"installed executable expected at {BITMOJI}"
    folder = tmp_path / "images"
    write_good_images(folder)
    output = tmp_path / "p.csv"
    result = subprocess.run(
        [str(BITMOJI), "predict", str(folder), "--model", str(exported.onnx), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"{len(GOOD)} images" in result.stdout
    assert [row["image_id"] for row in read_csv(output)[1]] == sorted(GOOD)
