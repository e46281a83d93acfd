"""The MLflow UI in a real browser: builds a small store (generated faces, two training runs, a
3-fold cv, an export registered as @champion, an evaluation), starts `bitmoji ui`, opens the
URL it prints and the pages a person goes through (runs, a run, compare, the Models tab, a
logged model, the registry, an evaluation) in headless Chromium, and saves a screenshot of each
plus pages.json: each page's address and whether the sidebar was in model-training mode.

    .venv/bin/python benchmarks/ui_screenshots.py --browser-python /work/uivenv/bin/python \\
        [--out reports/ui] [--docs docs/images]

The browser side needs Playwright, in a venv of its own (`python -m venv /work/uivenv &&
/work/uivenv/bin/pip install playwright`), and a Chromium (Debian: `apt-get install chromium`,
`--chromium /usr/bin/chromium`); this script runs that venv's python on itself with --shoot.
Everything (data, store, server) lives in a temporary folder; the server is always stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "bitmoji-gender"
STARTUP_SECONDS = 180
# Two of the screenshots illustrate the README.
README_IMAGES = {"runs": "ui_runs.png", "compare": "ui_compare.png"}
GENAI_ONLY = ("Sessions", "Judges", "Agent versions")  # sidebar/tab words of GenAI mode only
ASSISTANT_CLOSE = "button[data-component-id='mlflow.assistant.chat_panel.close']"


# --- the store (project venv) -------------------------------------------------------------------


def bitmoji(*arguments: str, env: dict[str, str], cwd: Path) -> str:
    """Run one `bitmoji` command; its output, or exit with it on failure."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *arguments], env=env, cwd=cwd, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"bitmoji {' '.join(arguments)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def build_store(work: Path, env: dict[str, str]) -> None:
    """Tiny generated data, two training runs, a 3-fold cv, @champion and an evaluation."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_dataset  # the generated faces the tests train on

    data = make_dataset(work / "bitmoji", n_train=60)
    lists = str(work / "lists")
    quick = ["--threads", "1", "--batch-size", "16"]
    bitmoji("prepare", "--data-dir", str(data), "--lists", lists, env=env, cwd=work)
    bitmoji("train", "--lists", lists, "--epochs", "4", *quick, env=env, cwd=work)
    bitmoji("train", "--lists", lists, "--epochs", "4", "--lr", "0.004", *quick, env=env, cwd=work)
    bitmoji("cv", "--lists", lists, "--folds", "3", "--epochs", "2", *quick, env=env, cwd=work)
    bitmoji("export-onnx", "--lists", lists, "--output", str(work / "bitmoji.onnx"), env=env, cwd=work)
    bitmoji("evaluate", "--lists", lists, "--threads", "1", env=env, cwd=work)


def page_addresses(uri: str, base: str) -> dict[str, str]:
    """The addresses of the pages to open, from what the store holds."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    training = client.get_experiment_by_name(EXPERIMENT).experiment_id
    evaluations = client.get_experiment_by_name(f"{EXPERIMENT}-evaluations").experiment_id
    runs = [  # the training runs, oldest first (a missing tag does not match `!=` in MLflow)
        run
        for run in client.search_runs([training], order_by=["attributes.start_time ASC"])
        if "run_kind" not in run.data.tags
    ]
    champion = client.get_model_version_by_alias("bitmoji-gender", "champion")
    (evaluation,) = client.search_runs([evaluations])
    checkpoint = client.search_logged_models(
        [training], filter_string=f"source_run_id = '{runs[0].info.run_id}'"
    )
    return {
        "experiment": training,
        "first_run_name": runs[0].info.run_name,
        "compare": f"{base}/#/compare-runs?runs={json.dumps([run.info.run_id for run in runs])}"
        f"&experiments={json.dumps([training])}",
        "models": f"{base}/#/experiments/{training}/models",
        "logged_model": f"{base}/#/experiments/{training}/models/{checkpoint[0].model_id}",
        "registry": f"{base}/#/models/bitmoji-gender",
        "version": f"{base}/#/models/bitmoji-gender/versions/{champion.version}",
        "champion_model": f"{base}/#/experiments/{training}/models/{champion.source.removeprefix('models:/')}",
        "evaluation": f"{base}/#/experiments/{evaluations}/runs/{evaluation.info.run_id}",
    }


def start_ui(work: Path, env: dict[str, str], port: int, log: Path) -> tuple[subprocess.Popen, str]:
    """`bitmoji ui`, and the training runs' link it printed once its page answered."""
    ui = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "ui", "--port", str(port)],
        env=env,
        cwd=work,
        stdout=open(log, "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("training runs ("):
                return ui, line.split(": ", 1)[1].strip()
        if ui.poll() is not None:
            break
        time.sleep(0.2)
    os.killpg(ui.pid, signal.SIGTERM)
    sys.exit(f"bitmoji ui printed no link:\n{log.read_text()}")


# --- the browser (Playwright venv) ---------------------------------------------------------------


def sidebar_words(page) -> list[str]:
    """The GenAI-only words visible on the page (sidebar items, tab titles)."""
    text = page.inner_text("body")
    return [word for word in GENAI_ONLY if word in text]


def show_comparable_columns(page) -> None:
    """The runs table as a person sets it up to compare: the cv run's folds shown, the metric
    every run logs (final_val_acc) and best_val_acc / oof_acc as columns, Dataset and Source off."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):
        page.get_by_text("Columns", exact=True).click(timeout=5000)
        for name in ("Dataset", "Source"):  # the menu opens last in the page: `.last`
            page.get_by_text(name, exact=True).last.click(timeout=5000)
        for name in ("final_val_acc", "best_val_acc", "oof_acc"):
            page.get_by_placeholder("Search columns").fill(name)
            page.get_by_text(name, exact=True).last.click(timeout=5000)
        page.keyboard.press("Escape")
    with contextlib.suppress(PlaywrightTimeout):  # the cv run's "+" shows its folds
        cv_row = page.locator("[role=row]", has_text="cv3-").first
        cv_row.locator("[col-id*='Run Name'] button").first.click(timeout=5000)


def shoot(plan: dict, out: Path, chromium: str) -> None:
    """Open the printed link, click into the first run, then open each page; screenshot each."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    seen = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})

        def capture(name: str) -> None:
            page.wait_for_load_state("load")
            with contextlib.suppress(PlaywrightTimeout):  # some pages poll: never idle for long
                page.wait_for_load_state("networkidle", timeout=15000)
            page.wait_for_timeout(3000)  # the tables fill in after the first paint
            page.screenshot(path=str(out / f"{name}.png"))
            seen[:] = [entry for entry in seen if entry["page"] != name]
            seen.append({"page": name, "url": page.url, "genai_words": sidebar_words(page)})

        page.goto(plan["printed"])
        capture("runs")
        with contextlib.suppress(PlaywrightTimeout):  # the assistant panel takes a third of the page
            page.click(ASSISTANT_CLOSE, timeout=5000)
        show_comparable_columns(page)
        capture("runs")
        page.get_by_text(plan["first_run_name"], exact=True).first.click()  # one click into a run
        capture("run")
        for name in (
            "compare",
            "models",
            "logged_model",
            "champion_model",
            "registry",
            "version",
            "evaluation",
        ):
            page.goto(plan[name])
            capture(name)
        browser.close()
    (out / "pages.json").write_text(json.dumps(seen, indent=2))


# --- the driver ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--browser-python", default="/work/uivenv/bin/python", help="python with playwright")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "ui")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "images", help="README images")
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--work", type=Path, help="keep the store here (reused when it exists)")
    parser.add_argument("--shoot", type=Path, help=argparse.SUPPRESS)  # browser side: the plan file
    args = parser.parse_args()
    if args.shoot:
        shoot(json.loads(args.shoot.read_text()), args.out, args.chromium)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bitmoji-ui-shots-") as folder:
        work = args.work.resolve() if args.work else Path(folder)
        uri = f"sqlite:///{work}/mlruns/mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)}
        if not (work / "mlruns" / "mlflow.db").exists():
            work.mkdir(parents=True, exist_ok=True)
            build_store(work, env)
        ui, printed = start_ui(work, env, args.port, work / "ui.log")
        try:
            plan = {**page_addresses(uri, printed.split("/#/")[0]), "printed": printed}
            (work / "plan.json").write_text(json.dumps(plan))
            command = [args.browser_python, __file__, "--shoot", str(work / "plan.json")]
            subprocess.run([*command, "--out", str(args.out), "--chromium", args.chromium], check=True)
        finally:
            os.killpg(ui.pid, signal.SIGTERM)
            ui.wait(timeout=60)
    args.docs.mkdir(parents=True, exist_ok=True)
    for name, image in README_IMAGES.items():
        shutil.copyfile(args.out / f"{name}.png", args.docs / image)
    for entry in json.loads((args.out / "pages.json").read_text()):
        mode = "GenAI words: " + ", ".join(entry["genai_words"]) if entry["genai_words"] else "model training"
        print(f"{entry['page']:15} {mode:40} {entry['url']}")
    print(f"screenshots in {args.out}; README images in {args.docs}")


if __name__ == "__main__":
    main()
