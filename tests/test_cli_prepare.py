"""`bitmoji prepare` end to end: through CliRunner on `cli.app`, and through the installed
`bitmoji` executable on the real dataset."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import ROOT
from typer.testing import CliRunner

import cli
from bitmoji_ml import __version__, paths
from bitmoji_ml.data.lists import LIST_FILES, MANIFEST, read_list

OUTPUTS = sorted([*LIST_FILES.values(), MANIFEST])
BITMOJI = Path(sys.executable).with_name("bitmoji")
HEAVY = ("torch", "torchvision", "mlflow", "onnxruntime")

runner = CliRunner()


def prepare(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(cli.app, ["prepare", *args], env=env)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The per-class table printed by prepare (`class train val all share`, then `all`), as
    split -> [split, images] like round 1's split table, plus class -> its row's cells."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if len(cells) == 5 and cells[1].isdigit():
            rows[cells[0]] = cells
        if cells[:2] == ["test", "(unlabelled):"]:
            rows["test"] = ["test", cells[2]]
    rows["train"], rows["val"] = ["train", rows["all"][1]], ["val", rows["all"][2]]
    return rows


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(paths.DATA_ENV, None)
    return env


def read_rows(root: Path) -> tuple[list[str], list[list[str]]]:
    with open(root / "train.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def write_rows(root: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


# --------------------------------------------------------------------------------------------
# Happy path on the tiny dataset


def test_prepare_tiny_dataset(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "lists"
    result = prepare("--data-dir", str(tiny_dataset), "--lists", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == OUTPUTS

    _, rows = read_rows(tiny_dataset)
    n_val = round(len(rows) * 0.2)
    n_test = len(list((tiny_dataset / "testimages").iterdir()))
    table = table_rows(result.stdout)
    assert table["train"][1] == str(len(rows) - n_val)
    assert table["val"][1] == str(n_val)
    assert table["test"][1] == str(n_test)

    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["counts"] == {"train": len(rows) - n_val, "val": n_val, "test": n_test}
    assert manifest["digest"][:12] in result.stdout
    assert len(read_list(out / "train.txt")) == len(rows) - n_val
    assert len(read_list(out / "test.txt", labelled=False)) == n_test
    # Every listed image is a real file of the dataset.
    listed = [path for path, _ in read_list(out / "train.txt") + read_list(out / "val.txt")]
    assert all(path.is_file() and path.parent.parent == tiny_dataset.resolve() for path in listed)


def test_prepare_is_repeatable_and_seeded(tiny_dataset: Path, tmp_path: Path):
    base = ["--data-dir", str(tiny_dataset)]
    assert prepare(*base, "--lists", str(tmp_path / "a")).exit_code == 0
    assert prepare(*base, "--lists", str(tmp_path / "b")).exit_code == 0
    assert prepare(*base, "--lists", str(tmp_path / "c"), "--seed", "7").exit_code == 0
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "val.txt").read_bytes() != (tmp_path / "c" / "val.txt").read_bytes()


def test_prepare_head_split(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "lists"
    result = prepare("--data-dir", str(tiny_dataset), "--lists", str(out), "--split", "head")
    assert result.exit_code == 0, result.output
    _, rows = read_rows(tiny_dataset)
    cut = len(rows) - round(len(rows) * 0.2)
    assert [path.name for path, _ in read_list(out / "train.txt")] == [r[0] for r in rows[:cut]]
    assert [path.name for path, _ in read_list(out / "val.txt")] == [r[0] for r in rows[cut:]]
    assert [label for _, label in read_list(out / "val.txt")] == [1 if r[1] == "1" else 0 for r in rows[cut:]]


def test_prepare_uses_env_variable(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "lists"
    result = prepare("--lists", str(out), env={paths.DATA_ENV: str(tiny_dataset)})
    assert result.exit_code == 0, result.output
    assert json.loads((out / MANIFEST).read_text())["data_dir"] == str(tiny_dataset.resolve())


# --------------------------------------------------------------------------------------------
# Bad inputs: exit 1, a message naming what is wrong, and nothing written


def drop_train_csv(root: Path) -> list[str]:
    (root / "train.csv").unlink()
    return ["train.csv"]


def drop_trainimages(root: Path) -> list[str]:
    shutil.rmtree(root / "trainimages")
    return ["trainimages"]


def drop_testimages(root: Path) -> list[str]:
    shutil.rmtree(root / "testimages")
    return ["testimages"]


def drop_is_male_column(root: Path) -> list[str]:
    header, rows = read_rows(root)
    column = header.index("is_male")
    write_rows(
        root,
        [h for i, h in enumerate(header) if i != column],
        [[c for i, c in enumerate(row) if i != column] for row in rows],
    )
    return ["is_male"]


def bad_label(value: str):
    def breaker(root: Path) -> list[str]:
        header, rows = read_rows(root)
        rows[3][header.index("is_male")] = value
        write_rows(root, header, rows)
        return ["line 5", rows[3][0], f"is_male='{value}'"]  # line 1 is the header

    breaker.__name__ = f"label_{value}"
    return breaker


def duplicate_id(root: Path) -> list[str]:
    header, rows = read_rows(root)
    rows[6][0] = rows[5][0]
    write_rows(root, header, rows)
    return ["duplicate", "line 8", rows[5][0]]


def listed_image_missing(root: Path) -> list[str]:
    _, rows = read_rows(root)
    (root / "trainimages" / rows[7][0]).unlink()
    return [rows[7][0], "trainimages"]


def truncated_image(root: Path) -> list[str]:
    path = sorted((root / "trainimages").iterdir())[9]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return [path.name, "unusable"]


def text_as_jpg(root: Path) -> list[str]:
    path = sorted((root / "testimages").iterdir())[1]
    path.write_text("this is not an image\n")
    return [path.name, "unusable"]


def empty_testimages(root: Path) -> list[str]:
    for path in (root / "testimages").iterdir():
        path.unlink()
    return ["testimages", "no images"]


BREAKERS = [
    drop_train_csv,
    drop_trainimages,
    drop_testimages,
    drop_is_male_column,
    bad_label("0"),
    bad_label("2"),
    duplicate_id,
    listed_image_missing,
    truncated_image,
    text_as_jpg,
    empty_testimages,
]


@pytest.mark.parametrize("breaker", BREAKERS, ids=[b.__name__ for b in BREAKERS])
def test_prepare_bad_input(tiny_dataset: Path, tmp_path: Path, breaker):
    fragments = breaker(tiny_dataset)
    out = tmp_path / "lists"
    result = prepare("--data-dir", str(tiny_dataset), "--lists", str(out))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_prepare_bad_input_keeps_previous_lists(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "lists"
    assert prepare("--data-dir", str(tiny_dataset), "--lists", str(out)).exit_code == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    duplicate_id(tiny_dataset)
    result = prepare("--data-dir", str(tiny_dataset), "--lists", str(out), "--seed", "3")
    assert result.exit_code == 1
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--val-fraction", "1.5"], "--val-fraction"),
        (["--val-fraction", "0"], "--val-fraction"),
        (["--split", "random"], "random"),
    ],
)
def test_prepare_bad_options(tiny_dataset: Path, tmp_path: Path, options, fragment):
    out = tmp_path / "lists"
    result = prepare("--data-dir", str(tiny_dataset), "--lists", str(out), *options)
    assert result.exit_code == 1, result.output
    assert fragment in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_prepare_lists_is_a_file(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "lists"
    out.write_text("in the way\n")
    result = prepare("--data-dir", str(tiny_dataset), "--lists", str(out))
    assert result.exit_code == 1, result.output
    assert str(out) in result.stderr
    assert out.read_text() == "in the way\n"


def test_prepare_without_any_dataset(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    monkeypatch.setattr(paths, "SHARED_DATA", tmp_path / "no-shared")
    monkeypatch.setattr(paths, "LOCAL_DATA", tmp_path / "no-local")
    result = prepare("--lists", str(tmp_path / "lists"))
    assert result.exit_code == 1, result.output
    assert "train.csv" in result.stderr and "BITMOJI_DATA" in result.stderr
    assert not (tmp_path / "lists").exists()


# --------------------------------------------------------------------------------------------
# The installed executable on the real dataset (decoded once per module)


@pytest.fixture(scope="module")
def real_prepare(real_data: Path, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    assert BITMOJI.is_file(), f"installed executable expected at {BITMOJI}"
    out = tmp_path_factory.mktemp("real") / "lists"
    command = [str(BITMOJI), "prepare", "--data-dir", str(real_data), "--lists", str(out)]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=subprocess_env(), cwd=ROOT
    )
    return result, out


def test_prepare_real_data_executable(real_prepare, real_data: Path):
    result, out = real_prepare
    assert result.returncode == 0, result.stderr
    with open(real_data / "train.csv", newline="") as handle:
        n_labelled = sum(1 for _ in csv.DictReader(handle))
    n_test = len(list((real_data / "testimages").glob("*.jpg")))
    assert (n_labelled, n_test) == (3000, 1084)  # the Kaggle dataset as published
    table = table_rows(result.stdout)
    assert table["train"][1] == "2400"
    assert table["val"][1] == "600"
    assert table["test"][1] == "1084"
    # Per class and split, as counted from the lists in round 1 (male 1135 + 284).
    assert table["female"] == ["female", "1265", "316", "1581", "52.7%"]
    assert table["male"] == ["male", "1135", "284", "1419", "47.3%"]
    assert sorted(path.name for path in out.iterdir()) == OUTPUTS
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["counts"] == {"train": 2400, "val": 600, "test": 1084}


def test_prepare_real_data_lists_match_manifest(real_prepare):
    _, out = real_prepare
    manifest = json.loads((out / MANIFEST).read_text())
    train = read_list(out / "train.txt")
    val = read_list(out / "val.txt")
    test = read_list(out / "test.txt", labelled=False)
    assert (len(train), len(val), len(test)) == (2400, 600, 1084)
    assert not {p for p, _ in train} & {p for p, _ in val}
    assert sum(label for _, label in val) == manifest["class_balance"]["val"]["counts"]["male"]
    assert sum(label for _, label in train) == manifest["class_balance"]["train"]["counts"]["male"]


def test_executable_help_and_version():
    env = subprocess_env()
    result = subprocess.run([str(BITMOJI), "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "prepare" in result.stdout
    result = subprocess.run([str(BITMOJI), "--version"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"bitmoji-ml {version('bitmoji-ml')}"


def test_version_option():
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"bitmoji-ml {__version__}\n"
    assert __version__ == version("bitmoji-ml")


# --------------------------------------------------------------------------------------------
# Lazy imports: --help and prepare must not load the heavy libraries

LAZY_CHECK = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    import cli

    data, out, heavy = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
    runner = CliRunner()
    result = runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0 and "prepare" in result.output, result.output
    result = runner.invoke(cli.app, ["prepare", "--data-dir", data, "--lists", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file()
    loaded = sorted({name.split(".")[0] for name in sys.modules} & set(heavy))
    print("loaded:", loaded)
    sys.exit(3 if loaded else 0)
    """
)


def test_help_and_prepare_do_not_import_heavy_libraries(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "lists"
    result = subprocess.run(
        [sys.executable, "-c", LAZY_CHECK, str(tiny_dataset), str(out), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded: []" in result.stdout
    assert (out / "train.txt").is_file()


def test_lazy_check_detects_a_heavy_import(tiny_dataset: Path, tmp_path: Path):
    """The check above is not vacuous: with a heavy module imported it fails."""
    fake = tmp_path / "fake"
    (fake / "mlflow").mkdir(parents=True)
    (fake / "mlflow" / "__init__.py").write_text("")
    code = "import mlflow\n" + LAZY_CHECK
    env = {**subprocess_env(), "PYTHONPATH": str(fake)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tiny_dataset), str(tmp_path / "l"), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "'mlflow'" in result.stdout
