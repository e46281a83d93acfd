"""Spark through MLflow: `mlflow.pyfunc.spark_udf` over Spark's `binaryFile` source runs the
registered image model with no project code on the Spark side (local[2], ~50 real faces + bad
files); rows equal `bitmoji predict`'s."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from image_model_helpers import CHAMPION_URI, assert_rows_match, champion, face_files, reference_probabilities

# What round 1's recipe passed as result_type; the signature now gives Spark this type itself.
RESULT_TYPE = "struct<prob_male:double,is_male:bigint,error:string>"


@pytest.mark.slow
def test_spark_udf_scores_binary_files_like_predict(
    tmp_path_factory, mlflow_store_template, tmp_path: Path, monkeypatch
):
    import mlflow.pyfunc
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    found = champion(tmp_path_factory, mlflow_store_template)
    files = face_files(tmp_path / "faces", 48, corrupt=2)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", found.uri)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    monkeypatch.setenv("PYSPARK_DRIVER_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("bitmoji-spark-udf-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    try:
        predict = mlflow.pyfunc.spark_udf(spark, CHAMPION_URI, env_manager="local")  # as the README's recipe
        images = (
            spark.read.format("binaryFile").option("pathGlobFilter", "*.jpg").load(str(tmp_path / "faces"))
        )
        scored = images.select("path", predict(F.struct(F.col("content").alias("image"))).alias("p"))
        assert scored.schema["p"].dataType.simpleString() == RESULT_TYPE
        rows = scored.select("path", "p.prob_male", "p.is_male", "p.error").collect()
    finally:
        spark.stop()
    by_name = {Path(row["path"]).name: row for row in rows}
    assert sorted(by_name) == [f.name for f in files] and len(rows) == len(files)  # nothing lost or doubled
    names = sorted(by_name)
    prob = np.array([np.nan if by_name[n]["prob_male"] is None else by_name[n]["prob_male"] for n in names])
    assert_rows_match(
        names, prob, [by_name[n]["error"] for n in names], reference_probabilities(found.onnx, files)
    )
    good = [by_name[n]["is_male"] for n in names if not by_name[n]["error"]]
    assert len(good) == 48 and set(good) <= {1, -1}
