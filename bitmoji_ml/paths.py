"""Where data, lists, the MLflow store and exported models live (one source of truth)."""

from __future__ import annotations

import os
from pathlib import Path

from bitmoji_ml.errors import BitmojiError

DATA_ENV = "BITMOJI_DATA"
SHARED_DATA = Path("../shared/bitmoji")
LOCAL_DATA = Path("data/bitmoji")
LISTS_DIR = Path("data/lists")
CACHE_DIR = Path("data/cache")
MLRUNS_DIR = Path("mlruns")
DEFAULT_TRACKING_URI = f"sqlite:///{MLRUNS_DIR}/mlflow.db"
ARTIFACTS_DIR = MLRUNS_DIR / "artifacts"
ONNX_MODEL = Path("models/bitmoji.onnx")
PREDICTIONS_CSV = Path("predictions.csv")
AUDIT_DIR = Path("reports/audit")  # label_issues.csv and .png of `bitmoji audit`
EXPERIMENT = "bitmoji-gender"  # also the name its exports are registered under (`export-onnx`)

EXPECTED_LAYOUT = "train.csv, trainimages/, testimages/ (and sample_submission.csv)"
OWN_LAYOUTS = "one folder per class (DIR/<class>/<images>), or a labels CSV (--labels FILE)"


def resolve_data_dir(flag: str | Path | None = None) -> Path:
    """Pick the dataset folder: --data-dir, else $BITMOJI_DATA, else ../shared/bitmoji, else
    data/bitmoji. Which layout it holds is data/layouts.py's business."""
    if flag is not None:
        candidates = [(Path(flag), "--data-dir")]
    elif os.environ.get(DATA_ENV):
        candidates = [(Path(os.environ[DATA_ENV]), f"${DATA_ENV}")]
    else:
        candidates = [(SHARED_DATA, "default"), (LOCAL_DATA, "default")]
    for path, _source in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(f"{path} ({source})" for path, source in candidates)
    raise BitmojiError(
        f"no dataset folder found (tried {tried}). Download the Kaggle 'Bitmoji Faces Gender "
        f"Recognition' data and unpack it into {LOCAL_DATA}/ (or pass --data-dir / set "
        f"{DATA_ENV}); it must hold {EXPECTED_LAYOUT}. Your own images: --data-dir DIR with "
        f"{OWN_LAYOUTS}."
    )
