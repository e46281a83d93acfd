"""`bitmoji prepare --exclude FILE`: images a person judged mislabelled are left out of the lists
and recorded in the manifest; the dataset folder is never touched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from typer.testing import CliRunner

import cli

runner = CliRunner()


def prepare(dataset: Path, lists: Path, *extra: str):
    return runner.invoke(cli.app, ["prepare", "--data-dir", str(dataset), "--lists", str(lists), *extra])


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def listed_ids(lists: Path, name: str) -> list[str]:
    return [Path(line.rpartition(" ")[0]).name for line in (lists / name).read_text().splitlines()]


def test_prepare_exclude_leaves_the_images_out_and_records_them(tiny_dataset: Path, tmp_path: Path):
    before = folder_digest(tiny_dataset)
    exclusions = tmp_path / "label_issues.csv"  # the audit's format: image_id among other columns
    exclusions.write_text("rank,image_id,label\n1,0005.jpg,female\n2,0012.jpg,male\n3,0005.jpg,female\n")
    assert prepare(tiny_dataset, tmp_path / "all").exit_code == 0
    result = prepare(tiny_dataset, tmp_path / "lists", "--exclude", str(exclusions))
    assert result.exit_code == 0, result.output
    assert "left out 2 image(s)" in result.output
    manifest = json.loads((tmp_path / "lists" / "manifest.json").read_text())
    assert manifest["excluded"] == {
        "file": str(exclusions.resolve()),
        "sha256": hashlib.sha256(exclusions.read_bytes()).hexdigest(),
        "image_ids": ["0005.jpg", "0012.jpg"],
    }
    assert manifest["counts"]["train"] + manifest["counts"]["val"] == 38
    for name in ("train.txt", "val.txt"):
        kept = listed_ids(tmp_path / "lists", name)
        assert not {"0005.jpg", "0012.jpg"} & set(kept)
        # Every other image stays in the split it has without --exclude.
        without = [
            image for image in listed_ids(tmp_path / "all", name) if image not in ("0005.jpg", "0012.jpg")
        ]
        assert kept == without
    assert folder_digest(tiny_dataset) == before  # the dataset folder is only read


def test_prepare_exclude_refuses_unknown_ids_and_writes_nothing(tiny_dataset: Path, tmp_path: Path):
    exclusions = tmp_path / "x.csv"
    exclusions.write_text("image_id\n0005.jpg\n9999.jpg\nnope.png\n")
    result = prepare(tiny_dataset, tmp_path / "lists", "--exclude", str(exclusions))
    assert result.exit_code == 1
    assert "2 image id(s)" in result.output and "9999.jpg" in result.output and "nope.png" in result.output
    assert not (tmp_path / "lists").exists()


def test_prepare_exclude_needs_an_image_id_column(tiny_dataset: Path, tmp_path: Path):
    exclusions = tmp_path / "x.csv"
    exclusions.write_text("id,label\n0005.jpg,1\n")
    result = prepare(tiny_dataset, tmp_path / "lists", "--exclude", str(exclusions))
    assert result.exit_code == 1 and "no image_id column" in result.output
    result = prepare(tiny_dataset, tmp_path / "lists", "--exclude", str(tmp_path / "missing.csv"))
    assert result.exit_code == 1 and "not found" in result.output
