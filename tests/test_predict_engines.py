"""`bitmoji predict`'s two engines agree on what they read and refuse what they do not do: options
an engine would ignore are refused by name, --recursive means the same for both, unreadable
files are warned about once each by both and --strict writes nothing with either; the Ray engine
never replaces what is not a Parquet dataset, leaves no temporary folder when Ray fails to
start, and counts (and honours --strict for) an output given as a URI. A random-weights model
and a dozen generated faces: Ray runs on a local 2-CPU cluster."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import face
from random_model import export_network
from typer.testing import CliRunner

import cli
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.models import DEFAULT_MODEL, create_model
from bitmoji_ml.serving import predict_job as job_module
from bitmoji_ml.serving import ray_engine
from bitmoji_ml.serving.predict_job import predict_job

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export_network(tmp_path_factory.mktemp("engines-model"), create_model(DEFAULT_MODEL).eval())[1]


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """top/ with 4 faces and one unreadable file, and 2 more faces in top/sub/."""
    rng = np.random.default_rng(5)
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    for index in range(4):
        face(index % 2, rng).save(top / f"{index}.jpg", quality=90)
    for index in range(2):
        face(index % 2, rng).save(top / "sub" / f"s{index}.png")
    (top / "broken.jpg").write_text("not an image\n")
    return top


def predict(*args: object):
    return runner.invoke(cli.app, ["predict", *map(str, args)])


def refusal(result) -> str:
    assert result.exit_code == 1, result.output
    return result.stderr.strip().splitlines()[-1]


def names_in(dataset: str | Path) -> list[str]:
    return sorted(Path(path).name for path in pq.read_table(str(dataset)).column("path").to_pylist())


# --------------------------------------------------------------------------------------------
# Refusals: nothing starts, nothing is written


@pytest.mark.parametrize(
    "engine, extra, flag",
    [
        ("ray", ["--kaggle"], "--kaggle"),
        ("ray", ["--template", "t.csv"], "--template"),
        ("ray", ["--threads", "2"], "--threads"),
        ("plain", ["--template", "t.csv"], "--template"),
        ("plain", ["--actors", "2"], "--actors"),
        ("plain", ["--ray-address", "auto"], "--ray-address"),
    ],
)
def test_an_option_the_engine_does_not_use_is_refused_by_name(
    model: Path, nested: Path, tmp_path: Path, engine: str, extra: list[str], flag: str
):
    import ray

    output = tmp_path / "out"
    result = predict(nested, "--model", model, "--output", output, "--engine", engine, *extra)
    assert flag in refusal(result)
    assert not output.exists() and not ray.is_initialized()


def test_a_uri_needs_recursive_with_ray(model: Path, tmp_path: Path):
    result = predict("s3://bucket/faces", "--model", model, "--engine", "ray", "--output", tmp_path / "o")
    assert "--recursive" in refusal(result)


@pytest.mark.parametrize("kind", ["file", "folder of other files"])
def test_ray_never_replaces_what_is_not_a_parquet_dataset(model: Path, nested: Path, tmp_path: Path, kind):
    import ray

    output = tmp_path / "predictions.parquet"
    if kind == "file":
        output.write_text("someone's file\n")
    else:
        output.mkdir()
        (output / "notes.txt").write_text("keep me\n")
    result = predict(nested, "--model", model, "--engine", "ray", "--output", output)
    assert f"cannot write {output}" in refusal(result)
    assert not ray.is_initialized()
    kept = output.read_text() if kind == "file" else (output / "notes.txt").read_text()
    assert kept in ("someone's file\n", "keep me\n")


def test_ray_failing_to_start_leaves_no_temporary_folder(
    model: Path, nested: Path, tmp_path: Path, monkeypatch
):
    import ray

    def no_cluster(*args, **kwargs):
        raise ConnectionError("no Ray cluster at that address")

    monkeypatch.setattr(ray, "init", no_cluster)
    work = tmp_path / "work"
    work.mkdir()
    output = work / "out.parquet"
    output.mkdir()
    (output / "old.parquet").write_bytes(b"the earlier dataset")
    with pytest.raises(ConnectionError):
        predict_job(nested, model=model, output=output, engine="ray")
    assert sorted(path.name for path in work.iterdir()) == ["out.parquet"]  # nothing hidden beside it
    assert (output / "old.parquet").read_bytes() == b"the earlier dataset"


# --------------------------------------------------------------------------------------------
# Both engines on the same folder (real Ray)


@pytest.mark.slow
def test_both_engines_read_the_same_files_and_warn_the_same(model: Path, nested: Path, tmp_path: Path):
    shallow = tmp_path / "shallow.parquet"
    deep = tmp_path / "deep.parquet"
    plain = predict(nested, "--model", model, "--output", tmp_path / "p.csv")
    ray = predict(nested, "--model", model, "--output", shallow, "--engine", "ray")
    for result in (plain, ray):
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped")]
        assert len(warnings) == 1 and "broken.jpg" in warnings[0], result.stderr
        assert "4 images" in result.stdout and "1 skipped" in result.stdout, result.stdout
    assert names_in(shallow) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "broken.jpg"]  # no sub-folder
    rows = pq.read_table(shallow).to_pandas()
    (broken,) = [row for _, row in rows.iterrows() if row["path"].endswith("broken.jpg")]
    assert broken["error"] and broken["is_male"] == 0 and np.isnan(broken["prob_male"])

    result = predict(nested, "--model", model, "--output", deep, "--engine", "ray", "--recursive")
    assert result.exit_code == 0, result.output
    assert names_in(deep) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "broken.jpg", "s0.png", "s1.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary output left behind"


@pytest.mark.slow
def test_a_uri_output_is_counted_and_honours_strict(model: Path, nested: Path, tmp_path: Path):
    """A URI output is written in place by Ray (no local rename): the rows are counted before
    writing, so --strict still writes nothing and the summary has real numbers."""
    uri = (tmp_path / "remote.parquet").as_uri()
    strict = predict(nested, "--model", model, "--output", uri, "--engine", "ray", "--strict")
    assert "--strict: 1 file(s) could not be read" in refusal(strict)
    assert not (tmp_path / "remote.parquet").exists()
    with pytest.raises(BitmojiError, match="--strict"):  # the job refuses the same way
        predict_job(nested, model=model, output=uri, engine="ray", strict=True, num_cpus=2)
    result = predict_job(nested, model=model, output=uri, engine="ray", num_cpus=2)
    assert (result.rows, result.predicted, len(result.skipped), result.kind) == (5, 4, 1, "parquet")
    assert names_in(tmp_path / "remote.parquet") == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "broken.jpg"]


def test_the_job_returns_what_it_wrote(model: Path, nested: Path, tmp_path: Path):
    output = tmp_path / "p.csv"
    result = predict_job(nested, model=model, output=output, threads=1)
    assert (result.engine, result.kind, result.rows, result.predicted) == ("plain", "csv", 4, 4)
    assert result.output == str(output) and len(output.read_text().splitlines()) == 5
    assert [Path(path).name for path, _ in result.skipped] == ["broken.jpg"]
    assert sum(result.counts.values()) == result.predicted and result.seconds > 0
    assert list(result.counts) == ["female", "male"] and result.classes.kaggle
    assert job_module.PARQUET_OUTPUT.name == "predictions.parquet"
    assert ray_engine.is_local(str(output)) and not ray_engine.is_local("s3://b/x")
    assert os.path.basename(job_module.ray_files(str(nested), False)[0]) == "0.jpg"
