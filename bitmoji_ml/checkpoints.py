"""Checkpoint files: state_dict + config + preprocessing + metrics, never a pickled module.

Every file carries a format version. Format 2 (this version) puts the whole training state
(`training.state.TrainState.state_dict()`) under one `train_state` entry of `last.pt`; format 1
spread it over a dozen top-level keys. The model entries are the same in both, so `best.pt` of
either format exports, while only format 2 resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bitmoji_ml.data.classes import Classes
from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import atomic_path
from bitmoji_ml.models import MODELS, create_model
from bitmoji_ml.models.normalize import Classifier

FORMAT_VERSION = 2  # formats 1 to FORMAT_VERSION share the model entries below
MODEL_ENTRIES = ("state_dict", "model", "preprocess")
TRAIN_STATE = "train_state"


def save_checkpoint(path: Path, network: Classifier, **fields: Any) -> None:
    """Write `network`'s weights plus plain-data `fields` (config, preprocess, metrics, ...)."""
    payload = {"format": FORMAT_VERSION, "state_dict": network.state_dict(), **fields}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (`weights_only=True`: tensors and plain data, no code) and
    check its format version and model entries."""
    path = Path(path)
    if not path.is_file():
        raise BitmojiError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refusals and corrupt zips arrive as many types
        raise BitmojiError(f"{path} is not a bitmoji checkpoint ({error})") from error
    if not isinstance(payload, dict) or "format" not in payload:
        raise BitmojiError(f"{path} is not a bitmoji checkpoint (it has no format version)")
    _check_format(path, payload["format"])
    if any(key not in payload for key in MODEL_ENTRIES):
        raise BitmojiError(f"{path} is not a bitmoji checkpoint (needs {', '.join(MODEL_ENTRIES)} entries)")
    if payload["model"] not in MODELS:
        raise BitmojiError(
            f"{path} holds an unknown model {payload['model']!r}; known models: {', '.join(MODELS)}"
        )
    return payload


def _check_format(path: Path, found: object) -> None:
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise BitmojiError(f"{path} is not a bitmoji checkpoint (format {found!r})")
    if found > FORMAT_VERSION:
        raise BitmojiError(
            f"{path} has checkpoint format {found}, newer than this bitmoji-ml reads "
            f"({FORMAT_VERSION}): upgrade bitmoji-ml"
        )


def train_state_of(payload: dict[str, Any], source: str) -> dict[str, Any]:
    """The training state a `last.pt` payload (read by `read_checkpoint`) holds for `--resume`."""
    if payload["format"] != FORMAT_VERSION:
        raise BitmojiError(
            f"{source} has checkpoint format {payload['format']}; resuming needs format "
            f"{FORMAT_VERSION} (written by this bitmoji-ml): start a new run instead"
        )
    if not isinstance(payload.get(TRAIN_STATE), dict):
        raise BitmojiError(f"{source} holds no training state to resume (is it a best.pt?)")
    return payload[TRAIN_STATE]


def checkpoint_width(payload: dict[str, Any]) -> float:
    """The model's width multiplier (checkpoints written before the setting existed: 1)."""
    config = payload.get("config")
    return float(config.get("width", 1.0)) if isinstance(config, dict) else 1.0


def checkpoint_classes(payload: dict[str, Any]) -> Classes:
    """The classes the checkpoint's model tells apart, output i being P(names[i]); a checkpoint
    written before classes were recorded is Bitmoji's."""
    try:
        return Classes.from_dict(payload.get("classes"))
    except (KeyError, TypeError) as error:
        raise BitmojiError(f"checkpoint has a malformed classes entry: {error}") from error


def model_from_checkpoint(payload: dict[str, Any]) -> tuple[Classifier, Preprocess]:
    """Rebuild the network a checkpoint describes, in eval mode, with its preprocessing."""
    try:
        preprocess = Preprocess.from_dict(payload["preprocess"])
    except (KeyError, TypeError, ValueError) as error:
        raise BitmojiError(f"checkpoint has a malformed preprocess entry: {error}") from error
    classes = checkpoint_classes(payload)
    model = create_model(
        payload["model"], preprocess, width=checkpoint_width(payload), num_classes=len(classes)
    )
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as error:
        raise BitmojiError(f"checkpoint weights do not fit model {payload['model']!r}: {error}") from error
    return model.eval(), preprocess
