"""What MLflow knows the project's things by: one constant per name, and no MLflow import, so
that `comparison.py` and the CLI can use them without loading MLflow."""

from __future__ import annotations

CHAMPION_ALIAS = "champion"  # the registered model version that `evaluate` and users pick
ONNX_LOGGED_MODEL = "onnx-model"  # the logged model `export-onnx` adds to the source run
IMAGE_LOGGED_MODEL = "image-model"  # the pyfunc image model (bytes in), registered as @champion
CHECKPOINT_MODEL_TYPE = "bitmoji-checkpoint"  # model_type of every best-checkpoint logged model
CHECKPOINT_DIR = "checkpoints"  # run artifact folder of best.pt and last.pt
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
EXPORT_DIR = "onnx"  # run artifact folder of the exported files and parity report
PLOTS_DIR = "plots"

EVALUATION_TAG = "evaluation"  # "true" on every run `bitmoji evaluate` logs
EVALUATIONS_SUFFIX = "-evaluations"
DATASET_PREFIX = "bitmoji-"


def evaluation_experiment(experiment: str) -> str:
    """Where `bitmoji evaluate` logs its runs: an experiment of their own beside the training
    experiment, so the training runs table and charts hold training runs only."""
    return f"{experiment}{EVALUATIONS_SUFFIX}"


def dataset_name(split: str) -> str:
    """The MLflow dataset name of a list or labelled set, e.g. `bitmoji-val`."""
    return f"{DATASET_PREFIX}{split}"
