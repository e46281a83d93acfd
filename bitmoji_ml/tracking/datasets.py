"""The datasets runs are linked to: `prepare`'s train and val lists and the labelled sets that
`evaluate` scores, as MLflow datasets of (image file name, label) rows.

A dataset's digest is the SHA-256 of its file's bytes (cut to what MLflow stores), so it
names one split's exact content: the train and val lists digest differently, a re-`prepare`
with another seed changes the val digest, and `evaluate` on the val list links to the very
dataset the training runs were validated on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from bitmoji_ml.data.lists import LIST_FILES, read_list
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.tracking.names import dataset_name

if TYPE_CHECKING:  # MLflow only where a dataset becomes a run input: a LabelledFiles crosses to
    # processes that never import MLflow (tracking/mlflow_process.py)
    from mlflow.entities import Dataset, DatasetInput

DIGEST_CHARS = 16  # MLflow keeps at most 36 characters of a dataset digest


@dataclasses.dataclass(frozen=True)
class LabelledFiles:
    """Image file names with their labels, read from one list or CSV (`source`)."""

    name: str
    source: Path
    images: list[str]
    labels: list[int]
    digest: str

    def entity(self) -> Dataset:
        """The MLflow dataset: name, digest, source file, schema and row count."""
        import mlflow
        import pandas as pd
        from mlflow.entities import Dataset

        frame = pd.DataFrame({"image": self.images, "label": self.labels})
        with warnings.catch_warnings():  # MLflow's notes on source resolution and integer schemas
            warnings.simplefilter("ignore", UserWarning)
            described = mlflow.data.from_pandas(
                frame,
                source=str(Path(self.source).resolve()),
                targets="label",
                name=self.name,
                digest=self.digest,
            ).to_dict()
        return Dataset(
            name=described["name"],
            digest=described["digest"],
            source_type=described["source_type"],
            source=described["source"],
            schema=described.get("schema"),
            profile=described.get("profile"),
        )

    def as_input(self, context: str) -> DatasetInput:
        """A run input of this dataset, used as `context` (training, validation, evaluation)."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        return DatasetInput(self.entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def file_digest(path: Path) -> str:
    """The digest of a list or CSV file: SHA-256 of its bytes, shortened."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:DIGEST_CHARS]


def list_digest(*, manifest: dict, split: str) -> str:
    """The digest of `split`'s list as `prepare` recorded it in the manifest (equal to
    `file_digest` of the unmodified file)."""
    recorded = manifest.get("files", {}).get(LIST_FILES[split])
    if not recorded:
        raise BitmojiError(
            f"the lists' manifest.json has no digest of {LIST_FILES[split]}: run `bitmoji prepare` again"
        )
    return recorded[:DIGEST_CHARS]


def list_dataset(*, lists_dir: Path, manifest: dict, split: str) -> LabelledFiles:
    """`split`'s list from `prepare` (train or val) as a dataset."""
    path = Path(lists_dir) / LIST_FILES[split]
    entries = read_list(path)
    return LabelledFiles(
        name=dataset_name(split),
        source=path,
        images=[image.name for image, _ in entries],
        labels=[label for _, label in entries],
        digest=list_digest(manifest=manifest, split=split),
    )


def labelled_files(*, split: str, source: Path, images: list[str], labels: list[int]) -> LabelledFiles:
    """A labelled set read from `source` (a list or CSV), named after `split` (its stem)."""
    return LabelledFiles(
        name=dataset_name(split),
        source=Path(source),
        images=images,
        labels=labels,
        digest=file_digest(source),
    )


@dataclasses.dataclass(frozen=True)
class RunDatasets:
    """A training run's dataset inputs: what it trained on, and what it validated on (None: no
    validation). Only the validation dataset gets the run's val_* metrics linked to it."""

    training: list[LabelledFiles]
    validation: LabelledFiles | None

    def inputs(self) -> list[DatasetInput]:
        found = [dataset.as_input("training") for dataset in self.training]
        return found + ([self.validation.as_input("validation")] if self.validation else [])


def lists_datasets(*, lists_dir: Path, manifest: dict, all_labelled: bool = False) -> RunDatasets:
    """`prepare`'s lists as a run's inputs: train for training and val for validation, or both
    for training (`--all-labelled`)."""
    train, val = (
        list_dataset(lists_dir=lists_dir, manifest=manifest, split=split) for split in ("train", "val")
    )
    return RunDatasets([train, val], None) if all_labelled else RunDatasets([train], val)


def subset_dataset(*, split: str, source: Path, images: list[str], labels: list[int]) -> LabelledFiles:
    """Some labelled images of `source` (e.g. a cross-validation fold), named `bitmoji-<split>`,
    digested by their content: the same images and labels, the same digest."""
    rows = "".join(f"{image} {label}\n" for image, label in zip(images, labels, strict=True))
    digest = hashlib.sha256(rows.encode()).hexdigest()[:DIGEST_CHARS]
    return LabelledFiles(dataset_name(split), Path(source), list(images), list(labels), digest)
