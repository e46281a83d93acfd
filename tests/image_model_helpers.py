"""Shared by the image-model tests: the registered @champion downloaded once, real faces and a
corrupt file, and the reference probabilities from `bitmoji predict`'s code path."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import real_data_dir
from trained_store import EXPERIMENT, exported_store

from bitmoji_ml.tracking.names import champion_uri

CHAMPION_URI = champion_uri(EXPERIMENT)  # export_store registers under its experiment


@dataclasses.dataclass
class Champion:
    """The exported store, the ONNX file `bitmoji predict --model` uses, and the downloaded
    registered model folder."""

    uri: str
    onnx: Path
    model_dir: Path
    lists: Path


_champion: dict[str, Champion] = {}


def champion(tmp_path_factory: pytest.TempPathFactory, template_db: Path) -> Champion:
    if "champion" not in _champion:
        from bitmoji_ml.tracking.store import Store

        store = exported_store(tmp_path_factory, template_db)
        folder = tmp_path_factory.mktemp("champion")
        local = Store.open(store.uri).download(artifact_uri=CHAMPION_URI, folder=folder)
        _champion["champion"] = Champion(store.uri, store.onnx, Path(local), store.lists)
    return _champion["champion"]


def face_files(folder: Path, count: int, corrupt: int = 1) -> list[Path]:
    """`count` real faces copied into `folder` plus `corrupt` broken files (a truncated JPEG,
    then text named .jpg); returns every path, sorted. Skips (fails in CI) without the dataset."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((real_data_dir() / "trainimages").glob("*.jpg"))[:count]
    for source in sources:
        shutil.copyfile(source, folder / source.name)
    broken = [sources[0].read_bytes()[:300], b"this is not an image"]
    for index in range(corrupt):
        (folder / f"corrupt-{index}.jpg").write_bytes(broken[index % 2])
    return sorted(folder.iterdir())


def reference_probabilities(onnx: Path, paths: list[Path]) -> dict[str, float]:
    """P(male) per file name from the code `bitmoji predict` runs (skipped files left out)."""
    from bitmoji_ml.serving.folder_engine import predict_paths
    from bitmoji_ml.serving.onnx_model import OnnxModel

    result = predict_paths(OnnxModel.load(onnx, 1), paths, batch_size=64, workers=1)
    prob_male = result.probabilities[:, 1]
    return {path.name: float(prob) for path, prob in zip(result.paths, prob_male, strict=True)}


def assert_rows_match(
    names: list[str], prob: np.ndarray, errors: list[str], reference: dict[str, float]
) -> None:
    """Good files have predict's probability (<= 1e-6), bad files an error and no probability."""
    for name, value, error in zip(names, prob, errors, strict=True):
        if name in reference:
            assert error == "", f"{name}: {error}"
            assert abs(value - reference[name]) <= 1e-6, (name, value, reference[name])
        else:
            assert error, f"{name} is corrupt but has no error"
            assert value is None or np.isnan(value)  # null from the image model, NaN from Ray
