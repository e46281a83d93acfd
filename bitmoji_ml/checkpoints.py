"""Checkpoint files: state_dict + config + preprocessing + metrics, never a pickled module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bitmoji_ml.data.images import Preprocess
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import atomic_path
from bitmoji_ml.models import MODELS, create_model
from bitmoji_ml.models.normalize import Classifier

FORMAT_VERSION = 1


def save_checkpoint(path: Path, network: Classifier, **fields: Any) -> None:
    """Write `network`'s weights plus plain-data `fields` (config, preprocess, metrics, ...)."""
    payload = {"format": FORMAT_VERSION, "state_dict": network.state_dict(), **fields}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (`weights_only=True`: tensors and plain data, no code)."""
    path = Path(path)
    if not path.is_file():
        raise BitmojiError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refusals and corrupt zips arrive as many types
        raise BitmojiError(f"{path} is not a bitmoji checkpoint ({error})") from error
    required = ("state_dict", "model", "preprocess")
    if not isinstance(payload, dict) or any(key not in payload for key in required):
        raise BitmojiError(f"{path} is not a bitmoji checkpoint (needs {', '.join(required)} entries)")
    if payload["model"] not in MODELS:
        raise BitmojiError(
            f"{path} holds an unknown model {payload['model']!r}; known models: {', '.join(MODELS)}"
        )
    return payload


def model_from_checkpoint(payload: dict[str, Any]) -> tuple[Classifier, Preprocess]:
    """Rebuild the network a checkpoint describes, in eval mode, with its preprocessing."""
    try:
        preprocess = Preprocess.from_dict(payload["preprocess"])
    except (KeyError, TypeError, ValueError) as error:
        raise BitmojiError(f"checkpoint has a malformed preprocess entry: {error}") from error
    model = create_model(payload["model"], preprocess)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as error:
        raise BitmojiError(f"checkpoint weights do not fit model {payload['model']!r}: {error}") from error
    return model.eval(), preprocess
