"""Three classes of real images (scikit-learn's digits, as class folders) through every command a
first user runs, as that user runs them: prepare -> train -> export-onnx (parity, registered
@champion) -> predict -> serve one request. The served answer must be predict's answer."""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from own_images import write_digit_folders

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["one", "two", "zero"]  # sorted folder names
HOST = "127.0.0.1"


def bitmoji(*arguments: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *arguments],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"bitmoji {' '.join(arguments)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def serve_one_request(port: int, image: Path, env: dict[str, str], cwd: Path) -> dict:
    """`bitmoji serve` on `port` until it answers one request for `image`; always stopped."""
    log = cwd / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "serve", "--port", str(port), "--experiment", "digits"],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            body = json.dumps(
                {
                    "dataframe_split": {
                        "columns": ["image"],
                        "data": [[base64.b64encode(image.read_bytes()).decode()]],
                    }
                }
            ).encode()
            deadline = time.monotonic() + 180
            while True:
                assert server.poll() is None, log.read_text()[-3000:]
                request = urllib.request.Request(
                    f"http://{HOST}:{port}/invocations",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        return json.loads(response.read())
                except (urllib.error.URLError, ConnectionError):
                    assert time.monotonic() < deadline, (
                        "bitmoji serve never answered:\n" + log.read_text()[-3000:]
                    )
                    time.sleep(1)
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the whole group: `bitmoji serve` and its server
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@pytest.mark.slow
def test_three_classes_of_digits_from_prepare_to_a_served_request(tmp_path: Path):
    from test_model_server import free_port

    write_digit_folders(tmp_path / "digits", classes=(0, 1, 2), per_class=40)
    new = tmp_path / "new"
    new.mkdir()
    for name in ("zero/0000.png", "one/0001.png", "two/0002.png"):
        shutil.copy(tmp_path / "digits" / name, new / name.replace("/", "_"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db"}
    (tmp_path / "mlruns").mkdir()

    prepared = bitmoji("prepare", "--data-dir", "digits", env=env, cwd=tmp_path)
    assert "folders layout, 3 classes" in prepared
    manifest = json.loads((tmp_path / "data/lists/manifest.json").read_text())
    assert manifest["classes"]["names"] == CLASSES
    assert manifest["class_balance"]["val"]["counts"] == dict.fromkeys(CLASSES, 8)

    bitmoji("train", "--epochs", "3", "--batch-size", "16", "--experiment", "digits", env=env, cwd=tmp_path)
    exported = bitmoji(
        "export-onnx", "--output", "model.onnx", "--experiment", "digits", env=env, cwd=tmp_path
    )
    assert "registered digits v1" in exported and "@champion" in exported
    report = json.loads((tmp_path / "model.parity.json").read_text())
    assert report["passed"]
    validation = [case for case in report["cases"] if "val" in case["case"]]
    assert validation and validation[0]["images"] == 24  # every validation image, all 3 classes

    bitmoji("predict", "new", "--model", "model.onnx", "--output", "predictions.csv", env=env, cwd=tmp_path)
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = {row["image_id"]: row for row in csv.DictReader(handle)}
    assert list(next(iter(rows.values()))) == ["image_id", "label", *(f"prob_{name}" for name in CLASSES)]
    for row in rows.values():
        probabilities = [float(row[f"prob_{name}"]) for name in CLASSES]
        assert abs(sum(probabilities) - 1) < 1e-3
        assert row["label"] == CLASSES[int(np.argmax(probabilities))]

    (served,) = serve_one_request(free_port(), new / "two_0002.png", env, tmp_path)["predictions"]
    assert served["label"] == rows["two_0002.png"]["label"] and served["error"] == ""
    for name in CLASSES:
        assert served[f"prob_{name}"] == pytest.approx(float(rows["two_0002.png"][f"prob_{name}"]), abs=1e-5)
