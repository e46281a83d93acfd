"""Training on several processes: torchrun + DistributedDataParallel with gloo on CPU.

The pure parts (shards, batches, seeds, the launcher's command and checks) are tested directly.
Two jobs of two real torchrun workers run on the tiny generated dataset: one under torchrun
as a user would start it (`tests/torchrun_probe.py` runs `cli train` and records each rank's
shards and final weights), one through `bitmoji train --nproc 2`, whose rank 1 is killed."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
from conftest import ROOT, copy_store
from mlflow import MlflowClient
from typer.testing import CliRunner

import cli
from bitmoji_ml.checkpoints import TRAIN_STATE, model_from_checkpoint, read_checkpoint
from bitmoji_ml.data.dataset import load_dataset
from bitmoji_ml.data.lists import write_lists
from bitmoji_ml.errors import BitmojiError, ReportedElsewhere
from bitmoji_ml.export.job import export_job
from bitmoji_ml.recipe import Recipe, resolve_recipe
from bitmoji_ml.serving import processes as serving
from bitmoji_ml.training import distributed, launch, sharding, termination, train_job
from bitmoji_ml.training.settings import resolve_config

PROBE = ROOT / "tests" / "torchrun_probe.py"
TRAIN_IMAGES = 33  # the lists below: 40 generated faces, 7 for validation
BATCH = 14  # 2 full global batches, then 5 images: 3 on rank 0, 2 on rank 1
EPOCHS = 3
JOB_TIMEOUT = 300  # seconds; a bound against hangs, not a speed target
EPOCH_METRICS = {"train_loss", "train_objective", "train_acc", "val_loss", "val_acc", "lr"}


# --------------------------------------------------------------------------------------------
# Shards, batches and seeds


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_are_disjoint_cover_the_set_and_are_seeded_by_epoch(world_size: int) -> None:
    def shards(seed: int, epoch: int) -> list[list[int]]:
        return [
            sharding.shard_order(
                TRAIN_IMAGES, seed=seed, epoch=epoch, rank=rank, world_size=world_size
            ).tolist()
            for rank in range(world_size)
        ]

    first = shards(seed=0, epoch=1)
    flat = [index for shard in first for index in shard]
    assert sorted(flat) == list(range(TRAIN_IMAGES))  # disjoint and covering
    assert max(map(len, first)) - min(map(len, first)) <= 1
    assert shards(seed=0, epoch=1) == first  # reproducible
    assert shards(seed=0, epoch=2) != first and shards(seed=1, epoch=1) != first


def test_every_rank_takes_the_same_steps_and_the_loss_weights_give_the_global_mean() -> None:
    for count, batch_size, world_size in [(33, 14, 2), (33, 12, 3), (100, 8, 4), (30, 8, 2), (7, 4, 1)]:
        per_rank = [
            sharding.shard_batches(
                count, seed=0, epoch=1, batch_size=batch_size, rank=rank, world_size=world_size
            )
            for rank in range(world_size)
        ]
        assert len({len(batches) for batches in per_rank}) == 1
        for step in zip(*per_rank, strict=True):
            step_images = sum(len(batch.index) for batch in step)
            assert all(len(batch.index) >= 2 for batch in step)
            # DDP averages the ranks' gradients: weight_r * mean_r / W summed = the global mean.
            for batch in step:
                assert batch.loss_weight == pytest.approx(len(batch.index) * world_size / step_images)
    single = sharding.shard_batches(33, seed=0, epoch=1, batch_size=14, rank=0, world_size=1)
    assert [batch.loss_weight for batch in single] == [1.0, 1.0, 1.0]  # exactly: no change alone


def test_a_last_global_batch_too_small_for_every_rank_is_left_out() -> None:
    # 33 images at 10 per step: the last 3 cannot give 2 ranks two images each.
    assert sharding.steps_per_epoch(33, batch_size=10, world_size=2) == 3
    assert sharding.steps_per_epoch(33, batch_size=10, world_size=1) == 4
    assert sharding.steps_per_epoch(32, batch_size=10, world_size=1) == 4
    assert sharding.steps_per_epoch(31, batch_size=10, world_size=1) == 3  # a batch of one
    with pytest.raises(BitmojiError, match="too few for 2 processes"):
        sharding.steps_per_epoch(3, batch_size=8, world_size=2)


def test_the_global_batch_must_split_evenly() -> None:
    assert distributed.run_params(64) == {"world_size": "1"}  # alone, no per-rank batch to repeat
    assert launch.per_rank_batch_size(64, 4) == 16
    with pytest.raises(BitmojiError, match="batch_size 64 does not split evenly over 3 processes"):
        launch.per_rank_batch_size(64, 3)


def test_each_rank_and_epoch_draws_its_own_random_numbers() -> None:
    def draws(epoch: int, rank: int) -> tuple[list[float], list[float]]:
        """(augmentation, dropout) draws after seeding the epoch."""
        generator = sharding.seed_epoch(7, epoch, rank)
        return torch.rand(3, generator=generator).tolist(), torch.rand(3).tolist()

    assert draws(1, 0) == draws(1, 0)  # reproducible, whatever ran before
    others = [draws(2, 0), draws(1, 1), draws(1, 2)]  # another epoch, other ranks
    for augment, dropout in others:
        assert augment != draws(1, 0)[0] and dropout != draws(1, 0)[1]
    assert sharding.derived_seed(-1, 1) >= 0  # negative config seeds are fine


def test_threads_default_to_the_cores_shared_by_the_processes_of_a_machine(monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    cores = os.cpu_count() or 1
    assert resolve_config(Recipe(device="cpu")).threads == max(1, cores // 2)
    assert resolve_config(Recipe(device="cpu", threads=3)).threads == 3
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert resolve_config(Recipe(device="cpu")).threads == cores


def test_the_process_group_timeout_can_be_set(monkeypatch) -> None:
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.process_group_timeout().total_seconds() == distributed.DEFAULT_TIMEOUT_SECONDS
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "45")
    assert distributed.process_group_timeout().total_seconds() == 45
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(BitmojiError, match="number of seconds"):
        distributed.process_group_timeout()


def test_sigterm_waits_for_a_checkpoint_being_written_then_ends_the_run() -> None:
    previous = signal.signal(signal.SIGTERM, termination.on_sigterm)
    try:
        finished = []
        with pytest.raises(termination.Terminated), termination.termination_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            finished.append("checkpoint")
        assert finished == ["checkpoint"]
        with pytest.raises(termination.Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert issubclass(termination.Terminated, KeyboardInterrupt)  # the run ends as KILLED
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------------------------
# The launcher


def test_nproc_passes_the_resolved_recipe_to_torchrun(tiny_lists: Path, monkeypatch) -> None:
    launched = {}
    monkeypatch.setattr(launch, "launch_training", lambda **options: launched.update(options))
    arguments = ["train", "--nproc", "2", "--epochs", "3", "--no-flip", "--lr", "0.001"]
    result = CliRunner().invoke(cli.app, [*arguments, "--lists", str(tiny_lists)])
    assert result.exit_code == 0, result.output
    assert launched["nproc"] == 2
    assert launched["recipe"].given_values() == {"epochs": 3, "flip": False, "lr": 0.001}
    assert (launched["lists_dir"], launched["resume_run_id"]) == (tiny_lists, None)
    assert launched["entry_folder"] == ROOT
    command = launch.torchrun_command(nproc=2, arguments=["--config", "recipe.toml"])
    assert command[:5] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
    ]
    assert command[5:] == ["-m", "cli", "train", "--config", "recipe.toml"]


def test_workers_get_the_run_id_file_the_cores_and_this_cli(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    environment = launch.worker_environment(nproc=2, run_id_file=tmp_path / "id", entry_folder=ROOT)
    assert environment[launch.RUN_ID_FILE_ENV] == str(tmp_path / "id")
    assert environment["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert environment["PYTHONPATH"] == f"{ROOT}{os.pathsep}/elsewhere"


def test_mistakes_are_refused_before_any_worker_starts(tiny_lists: Path, mlflow_store: str, monkeypatch):
    def no_launch(*args, **kwargs):
        raise AssertionError("no worker should start")

    monkeypatch.setattr(serving, "run_in_foreground", no_launch)
    runner = CliRunner()
    odd = runner.invoke(cli.app, ["train", "--nproc", "3", "--lists", str(tiny_lists)])
    assert odd.exit_code == 1 and "batch_size 64 does not split evenly over 3 processes" in odd.output
    unknown = runner.invoke(
        cli.app, ["train", "--nproc", "2", "--resume", "--run-id", "0" * 32, "--lists", str(tiny_lists)]
    )
    assert unknown.exit_code == 1 and "unknown run id" in unknown.output
    monkeypatch.setenv("WORLD_SIZE", "2")
    nested = runner.invoke(cli.app, ["train", "--nproc", "2", "--lists", str(tiny_lists)])
    assert nested.exit_code == 1 and "leave --nproc out" in nested.output


def test_failed_workers_leave_no_run_running(mlflow_store: str) -> None:
    from bitmoji_ml.tracking.store import Store

    store = Store.open()
    client = MlflowClient()
    experiment = store.experiment_id("test-exp")
    for ended, status in [(serving.ServerExit(1), "FAILED"), (serving.ServerExit(None, "SIGINT"), "KILLED")]:
        run_id = client.create_run(experiment).info.run_id  # RUNNING, as a killed rank 0 leaves it
        error = launch.failure(store, ended=ended, run_id=run_id, resume_run_id=None, nproc=2)
        assert client.get_run(run_id).info.status == status
        assert f"Run {run_id} ended as {status}" in str(error)
        assert f"bitmoji train --resume --run-id {run_id} --nproc 2" in str(error)
    finished = client.create_run(experiment).info.run_id
    client.set_terminated(finished, "FINISHED")
    launch.failure(store, ended=serving.ServerExit(1), run_id=finished, resume_run_id=None, nproc=2)
    assert client.get_run(finished).info.status == "FINISHED"
    early = launch.failure(store, ended=serving.ServerExit(1), run_id="", resume_run_id=None, nproc=2)
    assert "no MLflow run was started" in str(early)


def test_an_error_another_rank_reported_is_not_printed_again(tiny_lists: Path, monkeypatch) -> None:
    def fails(**_):
        raise ReportedElsewhere("rank 0 stopped: something")

    monkeypatch.setattr("bitmoji_ml.training.train_job", fails)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as a torchrun worker: no store of its own
    result = CliRunner().invoke(cli.app, ["train", "--lists", str(tiny_lists)])
    assert result.exit_code == 1 and "error" not in result.output


# --------------------------------------------------------------------------------------------
# A two-process job under torchrun, as a user starts it


def kill_marked(marker: str) -> None:
    """SIGKILL every process whose environment carries `marker` (what a test started)."""
    for pid in marked_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def marked_processes(marker: str, **variables: str) -> list[int]:
    """Processes whose environment holds TEST_MARKER=`marker` and the given `variables`."""
    wanted = {f"TEST_MARKER={marker}".encode()} | {
        f"{key}={value}".encode() for key, value in variables.items()
    }
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= environment:
            found.append(int(entry.name))
    return found


def run_job(command: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `command` to its end within JOB_TIMEOUT; whatever it started is killed afterwards."""
    marker = uuid.uuid4().hex
    try:
        return subprocess.run(
            command,
            env={**environment, "TEST_MARKER": marker},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT,
        )
    finally:
        kill_marked(marker)


def job_environment(uri: str) -> dict[str, str]:
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": python_path}


@dataclasses.dataclass
class TorchrunJob:
    """What the two-rank job left: its output, the run as it ended, each rank's record."""

    output: str
    uri: str
    lists: Path
    run_id: str
    status: str
    params: dict[str, str]
    histories: dict[str, list[int]]  # metric -> steps
    ranks: list[dict]
    best: Path
    last: Path


@pytest.fixture(scope="module")
def torchrun_job(tmp_path_factory, tiny_dataset_template: Path, mlflow_store_template: Path) -> TorchrunJob:
    folder = tmp_path_factory.mktemp("torchrun")
    lists = folder / "lists"
    write_lists(load_dataset(tiny_dataset_template), lists, val_fraction=0.175, seed=0)
    uri = copy_store(mlflow_store_template, folder)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    flags = ["--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--image-size", "32"]  # threads: default
    command = [*torchrun, str(PROBE), str(folder / "ranks"), "train", "--lists", str(lists), *flags]
    done = run_job(command, job_environment(uri))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("bitmoji-gender").experiment_id])
    run_id = run.info.run_id
    return TorchrunJob(
        output=output,
        uri=uri,
        lists=lists,
        run_id=run_id,
        status=run.info.status,
        params=run.data.params,
        histories={key: [m.step for m in client.get_metric_history(run_id, key)] for key in EPOCH_METRICS},
        ranks=[torch.load(folder / "ranks" / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)],
        best=Path(client.download_artifacts(run_id, "checkpoints/best.pt", str(folder))),
        last=Path(client.download_artifacts(run_id, "checkpoints/last.pt", str(folder))),
    )


@pytest.mark.slow
def test_a_torchrun_job_is_one_mlflow_run_with_its_params_and_epoch_metrics(torchrun_job: TorchrunJob):
    assert torchrun_job.status == "FINISHED"
    params = torchrun_job.params
    assert (params["world_size"], params["batch_size"], params["batch_size_per_rank"]) == ("2", "14", "7")
    assert params["threads"] == str(max(1, (os.cpu_count() or 1) // 2))  # the cores shared by 2
    assert params["sync_batchnorm"] == "False"
    for key in EPOCH_METRICS:
        assert torchrun_job.histories[key] == [1, 2, 3], key
    # Rank 0 alone reports: one summary line and one line per epoch, not two.
    assert len(re.findall(r"best val acc", torchrun_job.output)) == 1
    assert len(re.findall(r"epoch +1/3", torchrun_job.output)) == 1


@pytest.mark.slow
def test_the_ranks_train_disjoint_shards_that_cover_the_training_set(torchrun_job: TorchrunJob):
    first, second = torchrun_job.ranks
    assert (first["rank"], second["rank"], first["world_size"]) == (0, 1, 2)
    for epoch in range(1, EPOCHS + 1):
        ours, theirs = first["shards"][epoch], second["shards"][epoch]
        assert not set(ours) & set(theirs)
        assert sorted(ours + theirs) == list(range(TRAIN_IMAGES))
        assert (len(ours), len(theirs)) == (17, 16)  # 7 + 7 + 3 and 7 + 7 + 2
    assert first["shards"][1] != first["shards"][2]  # a new order every epoch


@pytest.mark.slow
def test_weights_buffers_and_weight_average_are_identical_on_every_rank(torchrun_job: TorchrunJob):
    first, second = torchrun_job.ranks
    for part in ("model", "ema"):
        assert first[part].keys() == second[part].keys()
        for key, tensor in first[part].items():
            assert torch.equal(tensor, second[part][key]), (part, key)
    # Not trivially equal: BatchNorm statistics moved away from their initial values.
    running = [value for key, value in first["model"].items() if key.endswith("running_mean")]
    assert running and all(value.abs().sum() > 0 for value in running)


@pytest.mark.slow
def test_a_torchrun_checkpoint_loads_and_exports_in_one_process(torchrun_job: TorchrunJob, tmp_path: Path):
    last = read_checkpoint(torchrun_job.last)
    assert last["world_size"] == 2
    assert not any(key.startswith("module.") for key in last["state_dict"])  # the unwrapped model
    assert not any(key.startswith("module.") for key in last[TRAIN_STATE]["model"])
    for key, tensor in torchrun_job.ranks[0]["ema"].items():
        if key.startswith("module."):  # the weight average's network is what checkpoints hold
            assert torch.equal(last["state_dict"][key.removeprefix("module.")], tensor), key
    model, _ = model_from_checkpoint(read_checkpoint(torchrun_job.best))
    assert model(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)).shape == (1, 2)
    exported = export_job(
        output=tmp_path / "ddp.onnx",
        checkpoint=torchrun_job.best,
        lists_dir=torchrun_job.lists,
        register=False,
    )
    assert exported.report.passed and (tmp_path / "ddp.onnx").is_file()


@pytest.mark.slow
def test_a_torchrun_run_resumes_in_one_process(torchrun_job: TorchrunJob, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", torchrun_job.uri)
    resumed = train_job(
        lists_dir=torchrun_job.lists,
        experiment="bitmoji-gender",
        recipe=resolve_recipe(overrides={"epochs": EPOCHS + 1, "threads": 1}),
        resume_run_id=torchrun_job.run_id,
    )
    client = MlflowClient(tracking_uri=torchrun_job.uri)
    run = client.get_run(torchrun_job.run_id)
    assert resumed.run_id == torchrun_job.run_id and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2, 3, 4]
    assert run.data.tags["resumed.world_size"] == "1"
    assert run.data.params["batch_size"] == "14"  # the global batch: the same recipe


# --------------------------------------------------------------------------------------------
# `bitmoji train --nproc 2`: a killed rank ends the job, and the run resumes


class OutputReader:
    """Collects a process's output lines in a thread, so the test can wait for one."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, deadline: float) -> None:
        while not any(re.search(pattern, line) for line in self.lines):
            assert time.monotonic() < deadline, f"no line matched {pattern!r}:\n{''.join(self.lines)}"
            time.sleep(0.2)

    @property
    def text(self) -> str:
        return "".join(self.lines)


@dataclasses.dataclass
class KilledJob:
    """A `bitmoji train --nproc 2` job whose rank 1 was killed: what it printed and left."""

    exit_code: int
    output: str
    uri: str
    lists: Path
    run_id: str
    status: str
    last_epoch: int  # the epoch of the run's last.pt


@pytest.fixture(scope="module")
def killed_job(tmp_path_factory, tiny_dataset_template: Path, mlflow_store_template: Path) -> KilledJob:
    folder = tmp_path_factory.mktemp("killed")
    lists = folder / "lists"
    write_lists(load_dataset(tiny_dataset_template), lists, val_fraction=0.25, seed=0)
    uri = copy_store(mlflow_store_template, folder)
    marker = uuid.uuid4().hex
    environment = {**job_environment(uri), "TEST_MARKER": marker}
    command = [sys.executable, str(ROOT / "cli.py"), "train", "--nproc", "2", "--epochs", "500"]
    command += ["--lists", str(lists), *KILLED_JOB_FLAGS]
    process = subprocess.Popen(
        command, env=environment, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output = OutputReader(process)
        output.wait_for(r"epoch +2/500", time.monotonic() + JOB_TIMEOUT)  # last.pt holds epoch 2 or later
        (rank_one,) = marked_processes(marker, RANK="1")
        os.kill(rank_one, signal.SIGKILL)
        exit_code = process.wait(timeout=JOB_TIMEOUT)  # the job ends: no hang
        output.thread.join(timeout=10)
    finally:
        process.kill()
        kill_marked(marker)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("bitmoji-gender").experiment_id])
    last = read_checkpoint(client.download_artifacts(run.info.run_id, "checkpoints/last.pt", str(folder)))
    return KilledJob(exit_code, output.text, uri, lists, run.info.run_id, run.info.status, last["epoch"])


KILLED_JOB_FLAGS = ["--batch-size", "8", "--image-size", "32", "--threads", "1"]


@pytest.mark.slow
def test_killing_one_rank_ends_the_job_and_its_run_with_a_clear_message(killed_job: KilledJob):
    assert killed_job.exit_code == 1
    assert killed_job.status in ("FAILED", "KILLED")
    run_id = killed_job.run_id
    assert "a training process failed (torchrun exit code 1" in killed_job.output
    assert f"Run {run_id} ended as {killed_job.status}" in killed_job.output
    assert f"bitmoji train --resume --run-id {run_id} --nproc 2" in killed_job.output
    assert killed_job.last_epoch >= 2  # read back whole: the checkpoint stayed usable


@pytest.mark.slow
def test_the_killed_run_resumes_on_two_processes(killed_job: KilledJob):
    done, run_id = killed_job.last_epoch, killed_job.run_id
    command = [sys.executable, str(ROOT / "cli.py"), "train", "--nproc", "2", "--resume", "--run-id", run_id]
    command += ["--epochs", str(done + 1), "--lists", str(killed_job.lists), *KILLED_JOB_FLAGS]
    resumed = run_job(command, job_environment(killed_job.uri))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    client = MlflowClient(tracking_uri=killed_job.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == list(range(1, done + 2))
    assert "resumed.world_size" not in run.data.tags  # two processes again
