"""Serving a model of N classes (issue 18): `bitmoji predict`'s CSV (a label and a prob_<class>
column per class), the refusal of --kaggle, the image rows of the pyfunc / REST / Spark model and
its signature, one served request, Ray's Parquet; and Bitmoji's columns unchanged, from a file
exported today and one exported the round-1 way."""

from __future__ import annotations

import base64
import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from classes_models import (
    THREE,
    export_classes_model,
    export_round1,
    save_model_checkpoint,
    spread_network,
    write_images,
)
from typer.testing import CliRunner

import cli
from bitmoji_ml.data.classes import BITMOJI, predicted_indices
from bitmoji_ml.export.job import export_job
from bitmoji_ml.serving.image_batch import predict_image_bytes
from bitmoji_ml.serving.image_model import json_safe
from bitmoji_ml.serving.onnx_model import OnnxModel
from bitmoji_ml.serving.ray_engine import label_counts

COLUMNS = ["prob_a", "prob_b", "prob_c", "label", "error"]
runner = CliRunner()


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Path:
    return export_classes_model(tmp_path_factory.mktemp("three"))[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = write_images(folder, 24, seed=2)
    (folder / "broken.png").write_bytes(b"not an image")
    return paths


@pytest.fixture(scope="module")
def image_model(three: Path, images: list[Path], tmp_path_factory) -> Path:
    """The registered image model's folder for the three-class file (no tracking store)."""
    from mlflow.models import Model

    from bitmoji_ml.serving.image_model_registry import save_image_model

    folder = tmp_path_factory.mktemp("image-model") / "model"
    save_image_model(folder, mlflow_model=Model(), onnx_path=three, example_image=images[0])
    return folder


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_predict_writes_a_label_and_a_prob_column_per_class(three: Path, images: list[Path], tmp_path: Path):
    output = tmp_path / "p.csv"
    result = runner.invoke(
        cli.app, ["predict", str(images[0].parent), "--model", str(three), "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    header, rows = read_csv(output)
    assert header == ["image_id", "label", "prob_a", "prob_b", "prob_c"]
    assert [row["image_id"] for row in rows] == [path.name for path in images]  # broken.png skipped
    model = OnnxModel.load(three, threads=1)
    from bitmoji_ml.data.images import decode_image

    expected = model.predict(np.stack([decode_image(path, model.preprocess) for path in images]))
    written = np.array([[float(row[f"prob_{name}"]) for name in "abc"] for row in rows])
    np.testing.assert_allclose(written, expected, atol=1e-6)
    labels = [row["label"] for row in rows]
    assert labels == [THREE.names[index] for index in predicted_indices(expected)]
    assert set(labels) == {"a", "b", "c"}
    most_often_first = sorted("abc", key=lambda name: -labels.count(name))
    shares = ", ".join(f"{labels.count(name) / len(labels):.1%} {name}" for name in most_often_first)
    assert f"24 images, {shares}, 1 skipped" in result.stdout


def test_kaggle_submission_is_refused_for_other_classes(three: Path, images: list[Path], tmp_path: Path):
    template = tmp_path / "sample_submission.csv"
    template.write_text("image_id,is_male\n000.png,1\n")
    output = tmp_path / "k.csv"
    arguments = ["predict", str(images[0].parent), "--model", str(three), "--output", str(output)]
    result = runner.invoke(cli.app, [*arguments, "--kaggle", "--template", str(template)])
    assert result.exit_code == 1, result.output
    assert "--kaggle writes the Bitmoji competition's submission" in result.stderr
    assert "classes are a, b, c" in result.stderr
    assert not output.exists()


def test_image_rows_name_every_class_and_a_bad_row_has_no_prediction(three: Path, images: list[Path]):
    model = OnnxModel.load(three, threads=1)
    values = [path.read_bytes() for path in images[:5]] + [b"junk"]
    rows = predict_image_bytes(model, values, batch_size=4)
    assert list(rows.columns) == COLUMNS
    good = rows.iloc[:5]
    assert rows["error"].tolist()[:5] == [""] * 5 and rows["error"].iloc[5]
    prob = good[COLUMNS[:3]].to_numpy()
    assert good["label"].tolist() == [THREE.names[i] for i in predicted_indices(prob)]
    np.testing.assert_allclose(prob.sum(axis=1), 1, atol=1e-5)
    assert rows.iloc[5][COLUMNS[:3]].isna().all() and rows["label"].iloc[5] == ""
    records = json.loads(json.dumps(json_safe(rows).to_dict(orient="records"), allow_nan=False))
    assert records[5] == {
        "prob_a": None,
        "prob_b": None,
        "prob_c": None,
        "label": "",
        "error": records[5]["error"],
    }


def test_the_image_model_signature_names_the_columns_and_the_pyfunc_returns_them(
    image_model: Path, three: Path, images: list[Path]
):
    import mlflow.pyfunc

    signature = yaml.safe_load((image_model / "MLmodel").read_text())["signature"]
    outputs = [(column["name"], column["type"]) for column in json.loads(signature["outputs"])]
    assert outputs == [("prob_a", "double"), ("prob_b", "double"), ("prob_c", "double")] + [
        ("label", "string"),
        ("error", "string"),
    ]
    frame = pd.DataFrame({"image": [path.read_bytes() for path in images[:3]] + [b""]})
    out = mlflow.pyfunc.load_model(str(image_model)).predict(frame)
    assert list(out.columns) == COLUMNS
    expected = predict_image_bytes(OnnxModel.load(three, threads=1), frame["image"])
    assert out["label"].tolist() == expected["label"].tolist()
    assert out["prob_b"].iloc[3] is None and out["error"].iloc[3] == "empty image"


def test_bitmojis_signature_is_round_ones():
    from bitmoji_ml.serving.image_model_registry import signature

    outputs = [(spec.name, spec.type.name) for spec in signature(BITMOJI).outputs.inputs]
    assert outputs == [("prob_male", "double"), ("is_male", "long"), ("error", "string")]


def test_ray_counts_come_from_the_label_column():
    labels = pd.Series(["a", "c", "c", ""])
    assert label_counts(THREE, labels) == {"a": 1, "b": 0, "c": 2}
    assert label_counts(BITMOJI, pd.Series([1, -1, 1, 0])) == {"female": 1, "male": 2}


def test_bitmoji_csv_is_the_same_from_a_round1_file_and_from_todays_export(
    images: list[Path], tmp_path: Path
):
    """One Bitmoji network exported the round-1 way (prob_male output) and today (a checkpoint
    without classes -> probabilities [batch, 2]): both give round 1's columns and values."""
    network = spread_network(BITMOJI, seed=3)
    round1 = export_round1(tmp_path / "round1.onnx", network)
    checkpoint = save_model_checkpoint(tmp_path / "today.pt", network, None)
    today = tmp_path / "today.onnx"
    export_job(output=today, checkpoint=checkpoint, register=False, lists_dir=None)
    texts = []
    for model in (round1, today):
        output = tmp_path / f"{model.stem}.csv"
        arguments = ["predict", str(images[0].parent), "--model", str(model), "--output", str(output)]
        result = runner.invoke(cli.app, arguments)
        assert result.exit_code == 0, result.output
        assert "% male, 1 skipped" in result.stdout
        texts.append(output.read_text())
        header, rows = read_csv(output)
        assert header == ["image_id", "is_male", "prob_male"]
        assert {row["is_male"] for row in rows} == {"1", "-1"}
        assert all(row["is_male"] == ("1" if float(row["prob_male"]) >= 0.5 else "-1") for row in rows)
    assert texts[0] == texts[1]


@pytest.mark.slow
def test_a_served_request_answers_the_classes_columns(image_model: Path, images: list[Path], tmp_path: Path):
    from test_model_server import free_port, post, strict_json

    from bitmoji_ml.serving import model_server
    from bitmoji_ml.serving import processes as serving

    port = free_port()
    env = model_server.serve_environment(
        store_uri=f"sqlite:///{tmp_path}/unused.db", model_uri=str(image_model)
    )
    log = tmp_path / "server.log"
    with open(log, "w") as output:
        command = model_server.serve_command(port=port, workers=1)
        process = serving.start_process_group(
            command, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            model_server.wait_until_ready(process, port, timeout=90)
            body = {
                "dataframe_split": {
                    "columns": ["image"],
                    "data": [[base64.b64encode(images[0].read_bytes()).decode()], ["%%%"]],
                }
            }
            status, text = post(port, json.dumps(body).encode())
        except Exception:
            print(log.read_text()[-3000:])
            raise
        finally:
            serving.stop_process_group(process, timeout=15)
    assert status == 200, text
    good, bad = strict_json(text)["predictions"]
    assert list(good) == COLUMNS and good["error"] == "" and good["label"] in THREE.names
    assert bad["prob_a"] is None and bad["label"] == "" and bad["error"].startswith("not valid base64")


@pytest.mark.slow
def test_ray_writes_the_classes_columns(three: Path, images: list[Path], tmp_path: Path):
    import pyarrow.parquet as pq

    from bitmoji_ml.serving.predict_job import predict_job

    output = tmp_path / "out.parquet"
    result = predict_job(images[0].parent, model=three, output=output, engine="ray", batch_size=8, num_cpus=2)
    table = pq.read_table(output).to_pandas().sort_values("path")
    assert list(table.columns) == ["path", *COLUMNS]
    assert (result.rows, result.predicted, len(result.skipped)) == (25, 24, 1)
    good = table[table["error"] == ""]
    assert good["label"].tolist() == [THREE.names[i] for i in predicted_indices(good[COLUMNS[:3]].to_numpy())]
    assert result.counts == {name: int((good["label"] == name).sum()) for name in "abc"}


@pytest.mark.slow
def test_spark_rows_take_their_type_from_the_signature(image_model: Path, images: list[Path], monkeypatch):
    import sys

    import mlflow.pyfunc
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    monkeypatch.setenv("PYSPARK_DRIVER_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("bitmoji-classes-spark-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    try:
        predict = mlflow.pyfunc.spark_udf(spark, str(image_model), env_manager="local")
        files = spark.read.format("binaryFile").load(str(images[0].parent))
        scored = files.select("path", predict(F.struct(F.col("content").alias("image"))).alias("p"))
        schema = scored.schema["p"].dataType.simpleString()
        rows = {Path(row["path"]).name: row for row in scored.select("path", "p.*").collect()}
    finally:
        spark.stop()
    assert schema == "struct<prob_a:double,prob_b:double,prob_c:double,label:string,error:string>"
    assert len(rows) == 25 and rows["broken.png"]["error"] and rows["broken.png"]["prob_a"] is None
    assert {rows[path.name]["label"] for path in images} == {"a", "b", "c"}


def test_the_summary_line_names_at_most_ten_classes(capsys):
    from bitmoji_ml.commands import views
    from bitmoji_ml.data.classes import Classes
    from bitmoji_ml.serving.predict_job import PredictResult

    classes = Classes(tuple(f"c{index:02d}" for index in range(12)))
    counts = {name: index for index, name in enumerate(classes.names)}  # c11 most often
    result = PredictResult("plain", "p.csv", "csv", 66, 66, counts, [], 1.0, classes)
    views.show_prediction(result)
    line = capsys.readouterr().out
    assert line.startswith("66 images, 16.7% c11, 15.2% c10, ") and "0.0% c00" not in line
    assert "3.0% c02 (1.5% in the 2 other classes), 0 skipped" in line  # c00 (none) and c01 (1 image)
    only = PredictResult("plain", "p.csv", "csv", 5, 5, {"c03": 5}, [], 1.0, classes)
    views.show_prediction(only)
    assert capsys.readouterr().out.startswith(
        "5 images, 100.0% c03 (0.0% in the 11 other classes), 0 skipped"
    )
