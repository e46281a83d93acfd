"""Start-up of the heavy commands: what importing the training job and the export job pulls in
(issue 21: scikit-learn and matplotlib cost ~1.5 s of every training run's start), MLflow left to
the child process of `evaluate` and `export-onnx`, and the validation confusion matrix computed
without scikit-learn."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from sklearn.metrics import confusion_matrix
from trained_store import EXPERIMENT, exported_store

from bitmoji_ml.training.evaluate import confusion_counts

# Needed later, or not at all, in a training run or an export: never at import.
LATE_LIBRARIES = ("sklearn", "matplotlib", "scipy", "pandas")


def modules_after_import(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after `statement`."""
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    return set(result.stdout.split())


def roots(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize(
    "statement",
    [
        "import bitmoji_ml.training.job",
        "from bitmoji_ml.training import train_job",
        "import bitmoji_ml.export.job",
    ],
)
def test_importing_a_job_leaves_metrics_and_plotting_libraries_for_later(statement: str) -> None:
    loaded = roots(modules_after_import(statement))
    assert "torch" in loaded  # the check sees real imports
    assert loaded.isdisjoint(LATE_LIBRARIES), sorted(loaded & set(LATE_LIBRARIES))


def test_a_light_training_module_does_not_import_the_training_job() -> None:
    loaded = modules_after_import("import bitmoji_ml.training.evaluate")
    assert "bitmoji_ml.training.job" not in loaded
    assert "bitmoji_ml.training.loop" not in loaded


@pytest.mark.parametrize(("seed", "classes"), [(seed, 2) for seed in range(5)] + [(5, 3), (6, 5)])
def test_confusion_counts_are_scikit_learns_confusion_matrix(seed: int, classes: int) -> None:
    rng = np.random.default_rng(seed)
    labels, predicted = rng.integers(0, classes, 50), rng.integers(0, classes, 50)
    if seed in (0, 5):
        predicted[:] = 1  # a class never predicted still has its column
    expected = confusion_matrix(labels, predicted, labels=list(range(classes)))
    counts = confusion_counts(labels, predicted, classes)
    assert counts.shape == (classes, classes)
    assert counts.dtype == np.int64
    assert counts.tolist() == expected.tolist()


def test_the_command_line_leaves_its_objects_out_of_the_shutdown_collection() -> None:
    # Interpreter shutdown walked torch's and MLflow's object graphs for ~2 s after a training
    # run; objects frozen by an exit handler of `cli` (which every entry point imports: the
    # `bitmoji` script, python -m cli, torchrun workers) are not walked.
    code = (
        "import atexit, gc, sys; "
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0)); "  # runs last
        "import cli; sys.argv = ['bitmoji', '--version']; cli.app()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["frozen", "True"]


@pytest.mark.parametrize("command", ["evaluate", "export-onnx"])
def test_evaluate_and_export_leave_mlflow_to_their_child_process(
    command: str, tmp_path_factory: pytest.TempPathFactory, mlflow_store_template, tmp_path
) -> None:
    """MLflow loads in the child while the command imports onnxruntime or torch (issue 21): it
    is never imported by the command's own process, which still logs and registers."""
    built = exported_store(tmp_path_factory, mlflow_store_template)
    arguments = ["--lists", str(built.lists), "--experiment", EXPERIMENT]
    if command == "export-onnx":  # the registered run again: a known version, nothing moves
        arguments += ["--run-id", built.run_ids[0], "--output", str(tmp_path / "again.onnx")]
    code = (
        "import atexit, sys; "
        "atexit.register(lambda: print('mlflow imported here:', 'mlflow' in sys.modules)); "
        f"import cli; sys.argv = {['bitmoji', command, *arguments]!r}; cli.app()"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": built.uri}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    done = "logged evaluation run" if command == "evaluate" else "already registered"
    assert done in result.stdout, result.stdout
    assert result.stdout.split()[-4:] == ["mlflow", "imported", "here:", "False"]


# Two training steps with each optimizer, then a checkpoint's round trip of the training state.
TRAINING_STEPS = """
import torch
from bitmoji_ml.recipe import recipe_from_values
from bitmoji_ml.training.loop import train_step
from bitmoji_ml.training.settings import preprocess_for, resolve_config
from bitmoji_ml.training.state import new_train_state
for optimizer in ("adamw", "sgd"):
    config = resolve_config(recipe_from_values({"optimizer": optimizer, "epochs": 1}))
    state = new_train_state(config, preprocess_for(config), torch.device("cpu"), 2, 2)
    images = torch.randint(0, 256, (8, 60, 60, 3)).float()
    for _ in range(2):
        train_step(state, images, torch.tensor([0, 1] * 4), config)
    state.load_state_dict(state.state_dict())
    assert state.optimizer.state, "the steps updated no optimizer state"
"""


def test_training_never_imports_the_compiler() -> None:
    """torch.optim.Optimizer imports torch._dynamo (1.2 s) on its first call; the training
    state's optimizer (training/optimizer.py) does not use it."""
    loaded = modules_after_import(f"exec({TRAINING_STEPS!r})")
    assert "bitmoji_ml.training.optimizer" in loaded  # the steps ran
    assert "torch._dynamo" not in loaded
