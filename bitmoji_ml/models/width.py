"""The `width` setting for models that have one size only."""

from __future__ import annotations

from bitmoji_ml.errors import BitmojiError


def fixed_width(model: str, width: float) -> None:
    """Refuse a width other than 1 for a model that cannot be scaled."""
    if width != 1:
        raise BitmojiError(f"model {model} has one size only: width must be 1, got {width:g}")
