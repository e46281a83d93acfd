"""Did the model train on the images `bitmoji evaluate` scores? Scoring a model on its own
training images measures how well it learnt them, not how it does on new faces: the
evaluation must say so.

An image is the file its path names: when the training images are where the lists say (this
machine, the usual case), the scored paths are matched exactly, so `cat/001.jpg` and
`dog/001.jpg` of a class-folder layout are two images. When the data folder has moved since
training, only file names can be compared (Bitmoji's image ids, which are unique). The model's
training lists are the source run's
training datasets as MLflow recorded them (name, digest of the list file, the file's path),
found on disk by digest: at the recorded path or in the lists folder. Without MLflow (a model
file, not logged), the lists folder's train.txt counts when its manifest digest is the one the
model was trained on."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bitmoji_ml.data.lists import LIST_FILES, MANIFEST, read_list
from bitmoji_ml.errors import BitmojiError

if TYPE_CHECKING:
    from bitmoji_ml.tracking.records import TrainingList

UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class TrainingOverlap:
    """How many of the `scored` images the model trained on (None: could not tell, `reason`
    says why), and the training lists that were read."""

    scored: int
    training: int | None
    lists: list[Path]
    reason: str = ""

    @property
    def tag(self) -> str:
        """The evaluation run's names.TRAINING_IMAGES_TAG: a count, or "unknown"."""
        return UNKNOWN if self.training is None else str(self.training)

    def message(self) -> str:
        """One line for the person who asked for the evaluation."""
        if self.training is None:
            return f"could not check whether the model trained on these images: {self.reason}"
        read = ", ".join(str(path) for path in self.lists)
        if not self.training:
            return f"none of the {self.scored} scored images is a training image of this model ({read})"
        return (
            f"{self.training} of the {self.scored} scored images ({self.training / self.scored:.1%}) are "
            f"images this model trained on ({read}): on them the metrics say how well it learnt its "
            "training set, not how it does on new faces; score the validation list or held-out images"
        )


def _file_with_digest(digest: str, candidates: Sequence[Path | None]) -> Path | None:
    from bitmoji_ml.tracking.datasets import file_digest

    for path in candidates:
        if path is not None and Path(path).is_file() and file_digest(path) == digest:
            return Path(path)
    return None


def _recorded_lists(recorded: list[TrainingList], lists_dir: Path) -> tuple[list[Path], str]:
    """The files of the training lists MLflow recorded, or a reason why one cannot be found."""
    beside = [Path(lists_dir) / LIST_FILES[split] for split in ("train", "val")]
    if not recorded:
        return [], "its training run recorded no training dataset"
    found = []
    for dataset in recorded:
        path = _file_with_digest(dataset.digest, [dataset.source, *beside])
        if path is None:
            places = ", ".join(str(place) for place in [dataset.source, Path(lists_dir)] if place is not None)
            return [], (
                f"no file holds its training list {dataset.name} (digest {dataset.digest}) any more "
                f"(looked in {places})"
            )
        found.append(path)
    return found, ""


def _manifest_lists(metadata: dict[str, str], lists_dir: Path) -> tuple[list[Path], str]:
    """Without MLflow: the lists folder's train list, when it is the data the model trained on."""
    manifest_path = Path(lists_dir) / MANIFEST
    try:
        digest = json.loads(manifest_path.read_text()).get("digest", "")
    except (OSError, ValueError):
        return [], f"no training run to ask and no readable {manifest_path}"
    trained_on = metadata.get("data_digest", "")
    if not trained_on or trained_on != digest:
        return [], f"the model was trained on other lists than {lists_dir} (data digest {trained_on or '?'})"
    return [Path(lists_dir) / LIST_FILES["train"]], ""


def training_overlap(
    scored: Sequence[Path],
    *,
    metadata: dict[str, str],
    lists_dir: Path,
    recorded: list[TrainingList] | None,
) -> TrainingOverlap:
    """How many of the `scored` images are training images of the model whose ONNX `metadata`
    is given: from the lists its run `recorded` (None: no run to ask), else from `lists_dir`."""
    if recorded is None:
        lists, reason = _manifest_lists(metadata, lists_dir)
    else:
        lists, reason = _recorded_lists(recorded, lists_dir)
    if reason:
        return TrainingOverlap(len(scored), None, [], reason)
    try:
        trained = [image for path in lists for image, _ in read_list(path)]
    except BitmojiError as error:  # e.g. a list whose manifest beside it was changed since
        return TrainingOverlap(len(scored), None, [], str(error))
    return TrainingOverlap(len(scored), count_trained(scored, trained), lists)


def count_trained(scored: Sequence[Path], trained: Sequence[Path]) -> int:
    """How many `scored` images are `trained` images: by resolved path when every training
    image is still where its list says, else (the data folder moved) by file name."""
    if all(Path(image).is_file() for image in trained):
        known = {Path(image).resolve() for image in trained}
        return sum(Path(path).resolve() in known for path in scored)
    names = {Path(image).name for image in trained}
    return sum(Path(path).name in names for path in scored)
