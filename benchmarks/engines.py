"""Batch engines against the plain loop on one folder: `bitmoji predict` (plain), `bitmoji
predict --engine ray` and the Spark recipe (`mlflow.pyfunc.spark_udf` over `binaryFile`).
Prints images/s and the start-up seconds each engine pays before its first image.

    .venv/bin/python benchmarks/engines.py [--images 20000] [--model models/bitmoji.onnx]
        [--model-uri models:/bitmoji-gender@champion] [--actors 1] [--partitions 8]

The folder is made of copies of the test images in a temp folder (run `make export` first).
Start-up is measured on a one-image folder; images/s over the whole folder includes it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bitmoji_ml import paths
from bitmoji_ml.paths import resolve_data_dir
from bitmoji_ml.report import format_table
from bitmoji_ml.serving.folder_engine import find_images
from bitmoji_ml.tracking.names import champion_uri
from bitmoji_ml.tracking.store import tracking_uri

ROOT = Path(__file__).resolve().parent.parent


def make_image_set(source: Path, target: Path, count: int) -> None:
    """`count` copies of the images in `source`, round-robin, with distinct names."""
    originals = find_images(source)
    target.mkdir(parents=True)
    for index in range(count):
        original = originals[index % len(originals)]
        shutil.copyfile(original, target / f"{index:06d}{original.suffix}")


def timed_cli(*arguments: str) -> float:
    """Wall seconds of one `bitmoji` command (fails loudly if the command fails)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), *arguments], check=True, capture_output=True)
    return time.perf_counter() - started


def plain(folder: Path, one: Path, model: Path, work: Path) -> tuple[float, float]:
    startup = timed_cli("predict", str(one), "--model", str(model), "--output", str(work / "one.csv"))
    return startup, timed_cli(
        "predict", str(folder), "--model", str(model), "--output", str(work / "plain.csv")
    )


def ray_engine(folder: Path, one: Path, model: Path, work: Path, actors: int) -> tuple[float, float]:
    common = ("--model", str(model), "--engine", "ray", "--actors", str(actors))
    startup = timed_cli("predict", str(one), *common, "--output", str(work / "one.parquet"))
    return startup, timed_cli("predict", str(folder), *common, "--output", str(work / "ray.parquet"))


def spark_recipe(folder: Path, model_uri: str, work: Path, partitions: int) -> tuple[float, float]:
    """The README recipe, timed: session + UDF (start-up), then read, score and write."""
    import mlflow.pyfunc
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    mlflow.set_tracking_uri(tracking_uri())
    started = time.perf_counter()
    spark = SparkSession.builder.master("local[*]").config("spark.ui.enabled", "false").getOrCreate()
    try:
        # No result_type: MLflow builds the struct from the registered model's signature, which
        # names the output columns of its classes (Bitmoji: prob_male, is_male, error).
        predict = mlflow.pyfunc.spark_udf(spark, model_uri, env_manager="local")
        startup = time.perf_counter() - started
        images = spark.read.format("binaryFile").load(str(folder)).repartition(partitions)
        scored = images.select("path", predict(F.struct(F.col("content").alias("image"))).alias("p"))
        scored.select("path", "p.*").write.mode("overwrite").parquet(str(work / "spark.parquet"))
        return startup, time.perf_counter() - started
    finally:
        spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--model", type=Path, default=paths.ONNX_MODEL)
    parser.add_argument("--model-uri", default=champion_uri(paths.EXPERIMENT))
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bitmoji-engines-") as folder:
        work = Path(folder)
        make_image_set(resolve_data_dir() / "testimages", work / "images", args.images)
        make_image_set(resolve_data_dir() / "testimages", work / "one", 1)
        results = {
            "plain bitmoji predict": plain(work / "images", work / "one", args.model, work),
            f"--engine ray ({args.actors} actor(s))": ray_engine(
                work / "images", work / "one", args.model, work, args.actors
            ),
            f"Spark spark_udf ({args.partitions} partitions)": spark_recipe(
                work / "images", args.model_uri, work, args.partitions
            ),
        }
    rows = [
        [name, round(startup, 1), round(wall, 1), round(args.images / wall)]
        for name, (startup, wall) in results.items()
    ]
    print(f"{args.images} images, {os.cpu_count()} CPUs")
    print(format_table(["engine", "start-up s", "wall s", "images/s"], rows))


if __name__ == "__main__":
    main()
