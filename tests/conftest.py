"""Shared fixtures: tiny generated datasets in the Kaggle layout and a migrated MLflow store."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "bitmoji"


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


@pytest.fixture
def shared_data() -> Path:
    """The real dataset; tests that need it fail loudly if it is missing."""
    assert (SHARED_DATA / "train.csv").is_file(), f"real dataset expected at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite MLflow store per session (migrations take seconds); tests copy it."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-template")
    MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db").search_experiments(max_results=1)
    return folder / "mlflow.db"


@pytest.fixture
def mlflow_store(mlflow_store_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh copy of the migrated store, set as MLFLOW_TRACKING_URI; returns the URI."""
    folder = tmp_path / "mlruns"
    folder.mkdir()
    shutil.copy(mlflow_store_template, folder / "mlflow.db")
    uri = f"sqlite:///{folder}/mlflow.db"
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
