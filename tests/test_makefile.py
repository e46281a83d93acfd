"""The Makefile's plan, read with `make --dry-run` in a copy of the project files (nothing is
installed or run): lists prepared only when missing, the quick test target, and the files a
run writes in the project folder kept out of git."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

MAKE = shutil.which("make")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Makefile and pyproject.toml with an up-to-date install stamp, as after `make install`."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    stamp = tmp_path / ".venv" / ".install-stamp"
    stamp.parent.mkdir()
    stamp.touch()
    later = (tmp_path / "pyproject.toml").stat().st_mtime + 10
    os.utime(stamp, (later, later))
    return tmp_path


def plan(project: Path, target: str) -> list[str]:
    """The commands `make TARGET` would run."""
    assert MAKE, "make is needed for the Makefile's own tests"
    # Under `make test` this runs as a sub-make: MAKELEVEL would make it print "Entering directory".
    outer = {"MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"}
    environment = {key: value for key, value in os.environ.items() if key not in outer}
    done = subprocess.run(
        [MAKE, "--dry-run", "--no-print-directory", "ARGS=", target],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.splitlines()


def test_train_prepares_the_lists_only_when_they_do_not_exist(project: Path):
    assert plan(project, "train") == [".venv/bin/bitmoji prepare", ".venv/bin/bitmoji train "]
    manifest = project / "data" / "lists" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")  # e.g. from `bitmoji prepare --exclude judged_wrong.csv`
    for target in ("train", "cv", "tune"):
        assert not [line for line in plan(project, target) if "prepare" in line], target
    assert plan(project, "prepare") == [".venv/bin/bitmoji prepare "]  # on purpose, always


def test_a_reinstall_does_not_prepare_again(project: Path):
    manifest = project / "data" / "lists" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    (project / ".venv" / ".install-stamp").unlink()  # pyproject.toml changed: install again
    commands = plan(project, "train")
    assert any("pip install" in line for line in commands)
    assert not [line for line in commands if "bitmoji prepare" in line]
    # The install ends by saying how `bitmoji` gets on PATH for the README's commands.
    assert "source .venv/bin/activate" in commands[commands.index("touch .venv/.install-stamp") + 1]


def test_the_quick_target_leaves_out_the_slow_tests_and_test_runs_all(project: Path):
    assert plan(project, "test-quick") == ['.venv/bin/python -m pytest -q -m "not slow" ']
    assert plan(project, "test") == [".venv/bin/python -m pytest -q "]


def test_mlflows_default_store_and_workflow_outputs_are_not_committed():
    names = ["mlflow.db", "predictions.parquet/part-0.parquet", "best_config.toml", "judged_wrong.csv"]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *names], cwd=ROOT, capture_output=True, text=True
    )
    assert ignored.stdout.split() == names, ignored.stderr
    tracked = subprocess.run(["git", "ls-files", "mlflow.db"], cwd=ROOT, capture_output=True, text=True)
    assert tracked.returncode == 0 and tracked.stdout == ""
