"""`bitmoji export-onnx --cv-run ID`: the fold models of a `bitmoji cv` run as one ONNX model
that outputs the mean of their probabilities.

The members are the folds' last-epoch checkpoints (`last.pt`: the weights cv scored out of
fold). They share one Normalize (one recipe, so one mean/std), so the graph takes the same
uint8 images as a single model and has the same outputs: `probabilities` is the mean of the
members' class probabilities, `logits` the log of that mean (their softmax gives back the mean);
the members must tell the same classes apart, in the same order. The
ensemble has no held-out score (between them the members trained on every labelled image), so
it is registered with no val acc and becomes @champion only with --promote, or when the
protocol's verdict (export/verdict.py) shows the recipe's ensembles better than its single models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from bitmoji_ml import paths
from bitmoji_ml.checkpoints import checkpoint_classes, model_from_checkpoint
from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.export.graph import export_graph, metadata_for, write_metadata
from bitmoji_ml.export.job import ExportResult, export_checked, parity_path
from bitmoji_ml.export.register import ExportedFiles, register_export
from bitmoji_ml.export.source import ExportSource, first_validation_image, source_from_file
from bitmoji_ml.export.verdict import Verdict, champion_rule
from bitmoji_ml.files import check_writable
from bitmoji_ml.models.normalize import Classifier
from bitmoji_ml.serving.onnx_model import OnnxModel

if TYPE_CHECKING:
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)
META_MEMBERS = "ensemble_members"  # JSON list of the members' run ids (the cv fold runs)
META_RECIPE = "recipe"  # JSON of the members' recipe
ENSEMBLE_TAG = "ensemble"  # on the registered version: "true"
MEMBERS_TAG = "ensemble_members"  # on the registered version: the members' run ids, comma-separated
TIMED_IMAGES = 64


class Ensemble(nn.Module):
    """One Normalize, then every member's network; out: log of the mean of their softmax
    probabilities (so that a softmax, as ExportWrapper and evaluation apply, gives the mean)."""

    def __init__(self, members: list[Classifier]) -> None:
        super().__init__()
        first = members[0].normalize
        for member in members[1:]:
            same = torch.equal(member.normalize.mean, first.mean) and torch.equal(
                member.normalize.std, first.std
            )
            if not same:
                raise BitmojiError("the members normalise differently: they are not one recipe's folds")
        self.normalize = first
        self.nets = nn.ModuleList(member.net for member in members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.normalize(images)
        probabilities = torch.stack([torch.softmax(net(pixels), dim=1) for net in self.nets]).mean(dim=0)
        return torch.log(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny))


@dataclasses.dataclass(frozen=True)
class ExportCost:
    """Size and onnxruntime ms/image of the ensemble and of one member (a print, not a benchmark)."""

    images: int
    ensemble_bytes: int
    member_bytes: int
    ensemble_ms: float
    member_ms: float


@dataclasses.dataclass
class EnsembleExportResult:
    """The export (parity, registration) plus the members and the cost beside one member."""

    export: ExportResult
    cv_run_id: str
    members: list[str]  # the fold runs' ids, in fold order
    cost: ExportCost
    decision: list[str] = dataclasses.field(default_factory=list)  # the protocol verdict, its cost


def load_members(store: Store, cv_run_id: str, folder: Path) -> list[ExportSource]:
    """Every fold's last.pt of the finished cv run `cv_run_id`, in fold order."""
    from bitmoji_ml.tracking.names import CV_FOLD, CV_RUN, LAST_CHECKPOINT
    from bitmoji_ml.tracking.parents import finished_children
    from bitmoji_ml.tracking.runs import download_run_checkpoint

    children = finished_children(store, run_id=cv_run_id, kind=CV_RUN, child_kind=CV_FOLD)
    expected = int(store.get_run(cv_run_id).data.params.get("cv_folds", 0))
    if not children or len(children) != expected:
        raise BitmojiError(
            f"cv run {cv_run_id} has {len(children)} finished fold run(s) of {expected}: "
            "an ensemble needs every fold"
        )
    children = sorted(children, key=lambda run: int(run.data.params["cv_fold"]))
    members = []
    for child in children:
        run_id = child.info.run_id
        path = download_run_checkpoint(store, run_id=run_id, name=LAST_CHECKPOINT, folder=folder / run_id)
        members.append(
            source_from_file(path, run_id, f"fold {child.data.params['cv_fold']} run {run_id} last.pt")
        )
    return members


def check_same_classes(members: list[ExportSource]) -> Classes:
    """The classes every member tells apart, or a BitmojiError naming the first that differs."""
    first = checkpoint_classes(members[0].payload)
    for member in members[1:]:
        classes = checkpoint_classes(member.payload)
        if classes != first:
            raise BitmojiError(
                f"{member.description} has classes {', '.join(classes.names)}, {members[0].description} "
                f"{', '.join(first.names)}: an ensemble averages members of the same classes, in order"
            )
    return first


def ensemble_source(members: list[ExportSource], cv_run_id: str, data_digest: str) -> ExportSource:
    """The ensemble as an export source: the first member's recipe, preprocessing and classes
    (the same for all), no val acc (it has no held-out images), the cv run as its run, and a
    hash of the members' hashes."""
    check_same_classes(members)
    payload = {**members[0].payload, "metrics": {}, "data_digest": data_digest}
    payload.pop("train_state", None)
    sha256 = hashlib.sha256("".join(member.sha256 for member in members).encode()).hexdigest()
    return ExportSource(payload, cv_run_id, f"cv run {cv_run_id}: {len(members)} fold models", sha256)


def ensemble_metadata(
    source: ExportSource, members: list[ExportSource], preprocess: Preprocess
) -> dict[str, str]:
    """A single model's metadata keys, plus the members' run ids and the recipe."""
    metadata = metadata_for(source.payload, source.run_id, preprocess)
    metadata["model_name"] = f"ensemble of {len(members)} {source.payload['model']}"
    metadata[META_MEMBERS] = json.dumps([member.run_id for member in members])
    metadata[META_RECIPE] = json.dumps(source.payload.get("config", {}), sort_keys=True)
    metadata["outputs"] += "; the mean over the members' probabilities (logits: log of that mean)"
    return metadata


def _ms_per_image(path: Path, images: np.ndarray) -> float:
    model = OnnxModel.load(path)
    model.predict_batched(images[:8])  # warm-up: the first run allocates
    started = time.perf_counter()
    model.predict_batched(images)
    return (time.perf_counter() - started) * 1000 / len(images)


def timing_images(validation: tuple[np.ndarray, np.ndarray] | None, preprocess: Preprocess) -> np.ndarray:
    """Up to TIMED_IMAGES validation images, or as many random ones without a validation list."""
    if validation is not None and len(validation[0]):
        return validation[0][:TIMED_IMAGES]
    shape = (TIMED_IMAGES, preprocess.size, preprocess.size, 3)
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def export_cost(member: ExportSource, ensemble_path: Path, images: np.ndarray, work: Path) -> ExportCost:
    """Export one member beside the ensemble and time both on `images`."""
    network, preprocess = model_from_checkpoint(member.payload)
    member_path = work / "member.onnx"
    export_graph(network, preprocess, member_path)
    write_metadata(member_path, metadata_for(member.payload, member.run_id, preprocess), full_check=False)
    return ExportCost(
        len(images),
        ensemble_path.stat().st_size,
        member_path.stat().st_size,
        _ms_per_image(ensemble_path, images),
        _ms_per_image(member_path, images),
    )


def export_ensemble_job(
    *,
    cv_run_id: str,
    output: Path,
    store: Store,
    experiment: str = paths.EXPERIMENT,
    lists_dir: Path | None = None,
    register: bool = True,
    promote: bool = False,
    verdict: Verdict | None = None,
) -> EnsembleExportResult:
    """Export the cv run's fold models as one ONNX model, check parity against the mean of the
    PyTorch members, write it and its parity report, and register it as a version of the
    registered model named after `experiment` (tagged as an ensemble
    with its members) without moving @champion unless `promote`, or `verdict` (the protocol's)
    applies to it and says the ensemble is better."""
    output = Path(output)
    torch.set_num_threads(os.cpu_count() or 1)
    for path in (output, parity_path(output)):
        check_writable(path)
    with tempfile.TemporaryDirectory(prefix="bitmoji-ensemble-") as scratch:
        work = Path(scratch)
        members = load_members(store, cv_run_id, work / "members")
        digest = store.get_run(cv_run_id).data.tags.get("data_digest", "")
        source = ensemble_source(members, cv_run_id, digest)
        networks = [model_from_checkpoint(member.payload) for member in members]
        preprocess = networks[0][1]
        if any(other != preprocess for _, other in networks[1:]):
            raise BitmojiError(f"the folds of cv run {cv_run_id} preprocess differently")
        ensemble = Ensemble([network for network, _ in networks]).eval()
        metadata = ensemble_metadata(source, members, preprocess)
        logger.info("exporting %s from %s", metadata["model_name"], source.description)
        report, report_path, validation = export_checked(
            ensemble, preprocess, metadata, output=output, work=work, lists_dir=lists_dir
        )
        result = ExportResult(output, output.stat().st_size, report, cv_run_id)
        cost = export_cost(members[0], output, timing_images(validation, preprocess), work)
        rule, decision = champion_rule(
            verdict,
            recipe=source.payload.get("config", {}),
            folds=len(members),
            csv_sha256=csv_sha256(lists_dir),
        )
        if register:
            files = ExportedFiles(
                output, report_path, output, "fp32", None, first_validation_image(lists_dir)
            )
            ids = [member.run_id for member in members]
            result.registration = register_export(
                store,
                registered_model=experiment,
                source=source,
                files=files,
                known_run=True,
                promote=promote or not rule,
                extra_tags={ENSEMBLE_TAG: "true", MEMBERS_TAG: ",".join(ids), "cv_run_id": cv_run_id},
                not_automatic=rule,
            )
            outcome = result.registration
            if outcome is not None and outcome.moved and not rule and not promote:
                result.registration = dataclasses.replace(outcome, reason=decision[0])
    return EnsembleExportResult(result, cv_run_id, [member.run_id for member in members], cost, decision)


def csv_sha256(lists_dir: Path | None) -> str | None:
    """The train.csv digest `prepare` recorded for the lists (None: no readable lists)."""
    from bitmoji_ml.data.lists import read_manifest

    if lists_dir is None:
        return None
    try:
        return read_manifest(lists_dir).get("csv_sha256")
    except BitmojiError:
        return None
