"""Shared fixtures: the real dataset found the way the CLI finds it, tiny generated datasets in the
Kaggle layout and a migrated MLflow store."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bitmoji_ml import paths
from bitmoji_ml.errors import BitmojiError

ROOT = Path(__file__).resolve().parent.parent
CI_ENV = "CI"  # set to "true" by CI services (GitHub Actions, GitLab CI, ...)


# --------------------------------------------------------------------------------------------
# The real dataset: --data-dir > $BITMOJI_DATA > the CLI's defaults, as `bitmoji prepare` does


@dataclasses.dataclass(frozen=True)
class RealData:
    """The real dataset of this test session, or why there is none and whether that fails."""

    folder: Path | None
    problem: str = ""
    must_exist: bool = False  # named by --data-dir / $BITMOJI_DATA, or under CI=true

    def require(self) -> Path:
        """The folder; else skip the calling test with the reason, or fail it when the data
        was named explicitly or this is CI (a CI run must not pass by skipping)."""
        if self.folder is not None:
            return self.folder
        if self.must_exist:
            pytest.fail(self.problem, pytrace=False)
        pytest.skip(self.problem)


def in_ci() -> bool:
    return os.environ.get(CI_ENV, "").strip().lower() in ("true", "1", "yes")


def find_real_data(flag: str | Path | None, root: Path = ROOT) -> RealData:
    """Resolve like `bitmoji_ml.paths.resolve_data_dir`: --data-dir and $BITMOJI_DATA relative to
    the current folder, the defaults (../shared/bitmoji, data/bitmoji) relative to the project
    `root`, so `pytest` finds the same data from any folder as the CLI does from the project."""
    named = flag is not None or bool(os.environ.get(paths.DATA_ENV))
    try:
        if named:
            folder = paths.resolve_data_dir(flag).resolve()
        else:
            with contextlib.chdir(root):
                folder = paths.resolve_data_dir().resolve()
    except BitmojiError as error:
        return RealData(None, f"real dataset not found: {error}", must_exist=named or in_ci())
    if not (folder / "train.csv").is_file():
        # A folder that is there but is not the dataset is a mistake to fix, never a skip.
        return RealData(None, f"{folder} is not the dataset: it has no train.csv", must_exist=True)
    return RealData(folder)


_real_data: list[RealData] = []  # resolved once per session, in pytest_configure


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--data-dir",
        default=None,
        metavar="DIR",
        help=f"the real Bitmoji dataset for the tests that need it (else ${paths.DATA_ENV}, "
        "else the CLI's defaults ../shared/bitmoji, data/bitmoji)",
    )


def pytest_configure(config: pytest.Config) -> None:
    _real_data[:] = [find_real_data(config.getoption("--data-dir"))]


def real_data_dir() -> Path:
    """The real dataset folder for helpers that are no fixture; skips or fails like `real_data`."""
    return _real_data[0].require()


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real dataset (absolute). Missing: the test is skipped with the reason (-rs prints it),
    or fails under CI=true or when --data-dir / $BITMOJI_DATA named a folder that is not there."""
    return real_data_dir()


def face(label: int, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A synthetic 'face' the models can learn: males are bluish with a dark bar, females reddish."""
    base = np.array([70, 90, 200] if label == 1 else [210, 90, 110], dtype=np.float64)
    pixels = base + rng.normal(0, 25, size=(size, size, 3))
    if label == 1:
        pixels[size // 2 :, size // 4 : 3 * size // 4] = 30
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_dataset(root: Path, n_train: int = 40, n_test: int = 8, size: int = 48, seed: int = 0) -> Path:
    """Write a Kaggle-layout dataset (train.csv, trainimages/, testimages/,
    sample_submission.csv) of generated JPEGs under `root`; return `root`."""
    rng = np.random.default_rng(seed)
    (root / "trainimages").mkdir(parents=True)
    (root / "testimages").mkdir()
    rows = []
    for index in range(n_train):
        label = index % 2
        image_id = f"{index:04d}.jpg"
        face(label, rng, size).save(root / "trainimages" / image_id, quality=95)
        rows.append((image_id, 1 if label else -1))
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "is_male", "left_eye_x", "left_eye_y"])
        writer.writerows((image_id, label, 10, 12) for image_id, label in rows)
    ids = []
    for index in range(n_train, n_train + n_test):
        image_id = f"{index:04d}.jpg"
        face(index % 2, rng, size).save(root / "testimages" / image_id, quality=95)
        ids.append(image_id)
    with open(root / "sample_submission.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "is_male"])
        writer.writerows((image_id, -1) for image_id in ids)
    return root


@pytest.fixture(scope="session")
def tiny_dataset_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated dataset per session; tests that modify it take a copy (`tiny_dataset`)."""
    return make_dataset(tmp_path_factory.mktemp("template") / "bitmoji")


@pytest.fixture
def tiny_dataset(tiny_dataset_template: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset, free to break."""
    return Path(shutil.copytree(tiny_dataset_template, tmp_path / "bitmoji"))


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite MLflow store per session (migrations take seconds); tests copy it."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-template")
    MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db").search_experiments(max_results=1)
    return folder / "mlflow.db"


def copy_store(template: Path, root: Path) -> str:
    """A copy of the migrated store `template` at `root`/mlruns/mlflow.db; returns its URI."""
    (root / "mlruns").mkdir()
    shutil.copy(template, root / "mlruns" / "mlflow.db")
    return f"sqlite:///{root}/mlruns/mlflow.db"


@pytest.fixture
def mlflow_store(mlflow_store_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh copy of the migrated store, set as MLFLOW_TRACKING_URI; returns the URI."""
    uri = copy_store(mlflow_store_template, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def tiny_lists(tiny_dataset: Path, tmp_path: Path) -> Path:
    """`prepare` run on the tiny dataset; returns the lists folder."""
    from bitmoji_ml.data.dataset import load_dataset
    from bitmoji_ml.data.lists import write_lists

    out = tmp_path / "lists"
    write_lists(load_dataset(tiny_dataset), out, val_fraction=0.25, seed=0)
    return out


@pytest.fixture(scope="module")
def single_torch_thread():
    """One intra-op thread for a module of tiny-tensor tests: they gain nothing from more, and on
    a busy 2-core machine extra threads spin against other jobs (a 10 ms forward becomes 1 s)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
