"""`bitmoji predict --engine ray`: Ray Data on a local 2-CPU cluster over ~200 real faces and a
few bad files writes one Parquet row per image file, equal to `bitmoji predict`'s CSV for every
good file, with the error for every bad one, and always shuts Ray down."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from image_model_helpers import champion, face_files
from typer.testing import CliRunner

import cli
from bitmoji_ml.serving.predict_job import predict_job


def plain_predict_csv(folder: Path, model: Path, output: Path) -> dict[str, float]:
    result = CliRunner().invoke(
        cli.app, ["predict", str(folder), "--model", str(model), "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    with open(output, newline="") as handle:
        return {row["image_id"]: float(row["prob_male"]) for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_ray_engine_writes_predicts_rows_and_errors(tmp_path_factory, mlflow_store_template, tmp_path: Path):
    import ray

    found = champion(tmp_path_factory, mlflow_store_template)
    folder = tmp_path / "faces"
    files = face_files(folder, 200, corrupt=2)
    (folder / "empty.JPG").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, not read")
    expected = plain_predict_csv(folder, found.onnx, tmp_path / "plain.csv")
    output = tmp_path / "out.parquet"
    output.mkdir()  # an earlier output is replaced
    (output / "stale.parquet").write_bytes(b"old")

    result = predict_job(
        folder, model=found.onnx, output=output, engine="ray", actors=1, batch_size=64, num_cpus=2
    )
    assert not ray.is_initialized()
    table = pq.read_table(output).to_pandas()
    assert list(table.columns) == ["path", "prob_male", "is_male", "error"]
    names = [Path(path).name for path in table["path"]]
    assert sorted(names) == sorted([f.name for f in files] + ["empty.JPG"])  # nothing lost or doubled
    assert (result.rows, result.predicted, len(result.skipped)) == (203, 200, 3)
    for name, prob, is_male, error in zip(
        names, table["prob_male"], table["is_male"], table["error"], strict=True
    ):
        if name in expected:
            assert error == "" and abs(prob - expected[name]) <= 1e-6, (name, prob, expected[name])
            assert is_male == (1 if prob >= 0.5 else -1)
        else:
            assert error.startswith("image bytes: ") or error == "empty image", (name, error)
    assert not list(tmp_path.glob(".out.parquet*")), "temporary output left behind"


def test_unusable_model_or_engine_fails_before_ray_starts(tmp_path: Path):
    import ray

    folder = tmp_path / "faces"
    face_files(folder, 2, corrupt=0)
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    runner = CliRunner()
    for model, fragment in [("missing.onnx", "not found"), ("broken.onnx", "not a loadable ONNX model")]:
        arguments = ["predict", str(folder), "--engine", "ray", "--model", str(tmp_path / model)]
        result = runner.invoke(cli.app, [*arguments, "--output", str(tmp_path / "o.parquet")])
        assert result.exit_code == 1 and fragment in result.output, result.output
    result = runner.invoke(cli.app, ["predict", str(folder), "--engine", "spark"])
    assert result.exit_code == 1 and "unknown --engine 'spark'" in result.output
    assert not ray.is_initialized() and not (tmp_path / "o.parquet").exists()
