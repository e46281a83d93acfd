"""How the tests find the real dataset: like the CLI (--data-dir > $BITMOJI_DATA > the defaults),
skipped with the reason when it is missing, and failing instead under CI=true or when a named
folder is not there. Checked on the resolver and on a real inner pytest session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CI_ENV, ROOT, find_real_data

from bitmoji_ml import paths


@pytest.fixture
def no_data_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    monkeypatch.delenv(CI_ENV, raising=False)


def dataset_folder(folder: Path) -> Path:
    """A folder the resolver accepts as the dataset (only train.csv is looked at)."""
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("image_id,is_male\n")
    return folder


def test_bitmoji_data_is_the_real_data(tmp_path: Path, no_data_settings, monkeypatch):
    data = dataset_folder(tmp_path / "elsewhere" / "bitmoji")
    monkeypatch.setenv(paths.DATA_ENV, str(data))
    assert find_real_data(None).require() == data


def test_the_data_dir_option_comes_before_bitmoji_data(tmp_path: Path, no_data_settings, monkeypatch):
    flag, env = dataset_folder(tmp_path / "flag"), dataset_folder(tmp_path / "env")
    monkeypatch.setenv(paths.DATA_ENV, str(env))
    assert find_real_data(flag).require() == flag


def test_the_defaults_are_the_clis_from_the_project_folder(tmp_path: Path, no_data_settings, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(tmp_path)  # pytest started from another folder
    local = dataset_folder(project / paths.LOCAL_DATA)
    assert find_real_data(None, root=project).require() == local
    shared = dataset_folder(project / paths.SHARED_DATA)
    assert find_real_data(None, root=project).require() == shared.resolve()


def test_no_dataset_skips_with_the_reason(tmp_path: Path, no_data_settings):
    with pytest.raises(pytest.skip.Exception, match="real dataset not found.*BITMOJI_DATA"):
        find_real_data(None, root=tmp_path).require()


def test_no_dataset_under_ci_fails(tmp_path: Path, no_data_settings, monkeypatch):
    monkeypatch.setenv(CI_ENV, "true")
    with pytest.raises(pytest.fail.Exception, match="real dataset not found"):
        find_real_data(None, root=tmp_path).require()


def test_a_named_folder_that_is_missing_or_not_the_dataset_fails(
    tmp_path: Path, no_data_settings, monkeypatch
):
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "typo"))
    with pytest.raises(pytest.fail.Exception, match="typo"):
        find_real_data(None).require()
    (tmp_path / "empty").mkdir()
    with pytest.raises(pytest.fail.Exception, match="has no train.csv"):
        find_real_data(tmp_path / "empty").require()


# --------------------------------------------------------------------------------------------
# An inner pytest session with this project's conftest and pytest configuration

INNER_TEST = """
import os

def test_real_data(real_data):
    assert str(real_data) == os.environ["EXPECTED_DATA"]
"""


def inner_pytest(folder: Path, **variables: str) -> subprocess.CompletedProcess:
    """pytest on one test that asks for `real_data`, in `folder` (its project root, so the
    default data folders are not there), with the project's pyproject.toml settings."""
    tests = folder / "tests"
    tests.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "test_inner.py").write_text(INNER_TEST)
    environment = {k: v for k, v in os.environ.items() if k not in (paths.DATA_ENV, CI_ENV)}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(folder)]
    command += ["-p", "no:cacheprovider", "-q", str(tests)]
    return subprocess.run(
        command, cwd=folder, env={**environment, **variables}, capture_output=True, text=True, timeout=120
    )


def test_a_session_uses_bitmoji_data_and_prints_why_it_skips(tmp_path: Path, tiny_dataset: Path):
    project = tmp_path / "project"
    assert not (project / paths.SHARED_DATA).exists() and not (project / paths.LOCAL_DATA).exists()
    found = inner_pytest(project, BITMOJI_DATA=str(tiny_dataset), EXPECTED_DATA=str(tiny_dataset))
    assert found.returncode == 0 and "1 passed" in found.stdout, found.stdout + found.stderr
    missing = inner_pytest(project, EXPECTED_DATA="")
    assert missing.returncode == 0 and "1 skipped" in missing.stdout, missing.stdout + missing.stderr
    assert "SKIPPED [1]" in missing.stdout and "real dataset not found" in missing.stdout  # -rs
    in_ci = inner_pytest(project, EXPECTED_DATA="", CI="true")
    assert in_ci.returncode == 1 and "1 error" in in_ci.stdout, in_ci.stdout + in_ci.stderr  # at set-up
    assert "real dataset not found" in in_ci.stdout
