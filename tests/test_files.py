"""files.atomic_paths: several files are replaced together, or none of them is (defect b of
issue 17: the ONNX file was replaced although its parity report could not be)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bitmoji_ml import files
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import atomic_paths, check_writable, write_files_atomic


def test_a_folder_in_place_of_the_second_file_leaves_the_first_unchanged(tmp_path: Path):
    model, report = tmp_path / "bitmoji.onnx", tmp_path / "bitmoji.parity.json"
    model.write_bytes(b"old model")
    report.mkdir()
    with pytest.raises(BitmojiError, match=f"cannot write {report}: it is a folder"):
        write_files_atomic({model: b"new model", report: b"{}"})
    assert model.read_bytes() == b"old model"
    assert report.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bitmoji.onnx", "bitmoji.parity.json"]


def test_a_folder_made_while_the_block_runs_is_found_before_any_rename(tmp_path: Path):
    model, report = tmp_path / "m.onnx", tmp_path / "m.parity.json"
    model.write_bytes(b"old model")
    with (
        pytest.raises(BitmojiError, match="it is a folder"),
        atomic_paths([model, report]) as (model_tmp, report_tmp),
    ):
        model_tmp.write_bytes(b"new model")
        report_tmp.write_bytes(b"{}")
        report.mkdir()
    assert model.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.parity.json"]


@pytest.mark.parametrize("report_existed", [True, False])
def test_a_failed_second_rename_puts_the_first_file_back(tmp_path: Path, monkeypatch, report_existed: bool):
    """The second rename fails for a reason no check can foresee (disk, permissions, a race):
    the first file, already replaced, gets its old content back."""
    model, report = tmp_path / "m.onnx", tmp_path / "m.parity.json"
    model.write_bytes(b"old model")
    if report_existed:
        report.write_bytes(b"old report")
    real_replace = os.replace

    def failing_replace(source, target):
        if Path(target) == report and str(source).endswith(".tmp"):
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(BitmojiError, match="No space left on device; nothing was replaced"):
        write_files_atomic({model: b"new model", report: b"new report"})
    assert model.read_bytes() == b"old model"
    assert report.read_bytes() == b"old report" if report_existed else not report.exists()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == sorted(["m.onnx"] + (["m.parity.json"] if report_existed else []))


def test_a_new_first_file_is_removed_when_the_second_rename_fails(tmp_path: Path, monkeypatch):
    model, report = tmp_path / "new.onnx", tmp_path / "new.parity.json"
    real_replace = os.replace

    def failing_replace(source, target):
        if Path(target) == report and str(source).endswith(".tmp"):
            raise OSError(13, "Permission denied")
        real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(BitmojiError, match="Permission denied"):
        write_files_atomic({model: b"new model", report: b"new report"})
    assert list(tmp_path.iterdir()) == []


def test_both_files_are_replaced_and_no_backup_is_left(tmp_path: Path):
    model, report = tmp_path / "m.onnx", tmp_path / "m.parity.json"
    model.write_bytes(b"old model")
    report.write_bytes(b"old report")
    write_files_atomic({model: b"new model", report: b"new report"})
    assert (model.read_bytes(), report.read_bytes()) == (b"new model", b"new report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.parity.json"]


def test_check_writable_refuses_a_folder(tmp_path: Path):
    (tmp_path / "m.parity.json").mkdir()
    with pytest.raises(BitmojiError, match="it is a folder"):
        check_writable(tmp_path / "m.parity.json")
