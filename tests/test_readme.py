"""The README's MLflow snippet works as written, from a project folder, with plain MLflow: the
registered @champion is found in the project's store, not in the empty `mlflow.db` MLflow 3
opens in the current folder when MLFLOW_TRACKING_URI is not set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from trained_store import EXPERIMENT, exported_store

from bitmoji_ml import paths

RUNNER = """
import json, sys
names = {}
exec(sys.stdin.read(), names)
print(json.dumps(names["model"].predict(__import__("pandas").DataFrame(
    {"image": [open("face.jpg", "rb").read()]})).to_dict("records")))
"""


def readme_block(containing: str) -> str:
    """The README's indented code block that contains `containing`, unindented."""
    block: list[str] = []
    for line in [*(ROOT / "README.md").read_text().splitlines(), ""]:
        if line.startswith("    ") or (block and not line.strip()):
            block.append(line[4:])
            continue
        text = "\n".join(block).strip()
        if containing in text:
            return text + "\n"
        block = []
    raise AssertionError(f"no code block with {containing!r} in README.md")


def test_the_pyfunc_snippet_loads_the_champion_from_the_project_folder(
    tmp_path_factory, mlflow_store_template, tmp_path: Path
):
    store = exported_store(tmp_path_factory, mlflow_store_template)
    project = tmp_path / "project"
    (project / paths.MLRUNS_DIR).mkdir(parents=True)
    shutil.copy(store.uri[len("sqlite:///") :], project / paths.MLRUNS_DIR / "mlflow.db")
    shutil.copy(mlflow_store_template, project / "mlflow.db")  # MLflow's own default: empty
    shutil.copy(next((store.dataset / "trainimages").glob("*.jpg")), project / "face.jpg")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    block = readme_block('mlflow.pyfunc.load_model("models:/bitmoji-gender@champion")')
    # What a person types at the Python prompt, as written (shell lines and output left out).
    snippet = "".join(line[4:] + "\n" for line in block.splitlines() if line.startswith(">>> "))
    # The README's model is the default experiment's; the shared store's is registered under its own.
    snippet = snippet.replace(f"models:/{paths.EXPERIMENT}@", f"models:/{EXPERIMENT}@")
    assert "load_model" in snippet
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=snippet,
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["error"] == "" and 0 <= row["prob_male"] <= 1 and row["is_male"] in (1, -1)
