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

# How a checkpoint logged model was chosen (its `selection` tag): the epoch with the best val_acc,
# or the last epoch (no selection: `cv` folds and `train --all-labelled`). Export ranks only the
# first kind by val_acc; the others are exported by --run-id.
SELECTION_TAG = "selection"
BEST_ON_VAL = "best_val_acc"
LAST_EPOCH = "last_epoch"

# `run_kind` tag of the runs that hold other runs (MLflow nested runs) and of their children.
RUN_KIND_TAG = "run_kind"
CV_RUN = "cv"  # a `bitmoji cv` parent: folds as children, OOF predictions as an artifact
CV_FOLD = "cv_fold"
TUNE_RUN = "tune"  # a `bitmoji tune` parent: trials as children
TUNE_TRIAL = "tune_trial"
OOF_PREDICTIONS = "oof_predictions.csv"  # artifact of a CV run
IMAGE_FOLDER_TAG = "image_folder"  # on a CV run: the folder its OOF image names are relative to
LABEL_ISSUES_CSV = "label_issues.csv"  # artifacts `bitmoji audit` adds to the CV run
LABEL_ISSUES_PNG = "label_issues.png"
BEST_CONFIG = "best_config.toml"  # artifact of a tune run
# Param of every training, cv and tune run: the class names in output order, e.g. "cat,dog,fox"
# (Bitmoji: "female,male"; runs from before classes were recorded have none: Bitmoji's).
CLASSES_PARAM = "classes"


def classes_param(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The `classes` param of a run that learns `names` (names hold no comma: data/classes.py)."""
    return {CLASSES_PARAM: ",".join(names)}


EVALUATION_TAG = "evaluation"  # "true" on every run `bitmoji evaluate` logs
# On each evaluation run: how many of the scored images the model trained on, or "unknown".
TRAINING_IMAGES_TAG = "training_images_scored"
EVALUATIONS_SUFFIX = "-evaluations"
DATASET_PREFIX = "bitmoji-"

# MLflow 3's experiment type (the UI's "experiment kind"): every experiment this tool makes or
# opens says it is model training, so the UI shows runs, charts and models rather than GenAI
# traces. The UI reads this tag (mlflow/server/js: `mlflow.experimentKind`); MLflow's Python
# package has no public constant for it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def champion_uri(registered_model: str) -> str:
    """The MLflow URI of `registered_model`'s @champion, e.g. `models:/bitmoji-gender@champion`
    (`export-onnx` names the registered model after the experiment)."""
    return f"models:/{registered_model}@{CHAMPION_ALIAS}"


def evaluation_experiment(experiment: str) -> str:
    """Where `bitmoji evaluate` logs its runs: an experiment of their own beside the training
    experiment, so the training runs table and charts hold training runs only."""
    return f"{experiment}{EVALUATIONS_SUFFIX}"


def dataset_name(split: str) -> str:
    """The MLflow dataset name of a list or labelled set, e.g. `bitmoji-val`."""
    return f"{DATASET_PREFIX}{split}"
