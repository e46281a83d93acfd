"""The classes a model tells apart, in one place: their names and order, the output columns named
after them, and how a row of probabilities becomes a label. No torch, no mlflow.

Class i is `names[i]`: the lists store the index, the network's output i is P(names[i]). A
dataset prepared from the Kaggle Bitmoji layout is `BITMOJI` (female, male, with Kaggle's
is_male = 1 / -1 mapping): its outputs keep the round-1 columns `prob_male` and `is_male`. Every
other dataset gets a `label` column (the class name) and one `prob_<name>` column per class.
Manifests, checkpoints and ONNX files written before classes were recorded are Bitmoji's.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence

import numpy as np

from bitmoji_ml.errors import BitmojiError

BITMOJI_NAMES = ("female", "male")
KAGGLE_LABEL_COLUMN = "is_male"
KAGGLE_PROB_COLUMN = "prob_male"
LABEL_COLUMN = "label"
PROB_PREFIX = "prob_"
# ONNX metadata keys (the export writes them, serving reads them).
META_CLASS_NAMES = "class_names"
META_LABEL_MAPPING = "kaggle_label_mapping"
# A class name becomes part of a column name (prob_<name>) in CSV, pandas, Spark and the served
# JSON: ASCII letters, digits, '_' and '-' travel through all of them unquoted.
VALID_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")


def check_class_names(names: Sequence[str], source: str = "the labels") -> tuple[str, ...]:
    """The names as a tuple, or a BitmojiError naming the offending value: at least two classes,
    each once, each usable inside a column name."""
    names = tuple(str(name) for name in names)
    bad = [name for name in names if not VALID_NAME.fullmatch(name)]
    if bad:
        raise BitmojiError(
            f"class name(s) {', '.join(repr(name) for name in bad[:10])} in {source} cannot name an "
            "output column: use ASCII letters, digits, '_' or '-' (at most 64), e.g. "
            f"{re.sub(r'[^A-Za-z0-9_-]+', '_', bad[0]).strip('_')[:64] or 'class_a'!r}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BitmojiError(f"class name(s) {', '.join(map(repr, repeated))} appear twice in {source}")
    if len(names) < 2:
        found = f"only {names[0]!r}" if names else "none"
        raise BitmojiError(f"{source} name {found}: a classifier needs two or more classes")
    return names


@dataclasses.dataclass(frozen=True)
class Classes:
    """The ordered class names of a dataset or model; `kaggle` marks Bitmoji's Kaggle labels."""

    names: tuple[str, ...]
    kaggle: bool = False

    def __post_init__(self) -> None:
        check_class_names(self.names)

    def __len__(self) -> int:
        return len(self.names)

    # -- output columns ------------------------------------------------------------------------

    @property
    def label_column(self) -> str:
        return KAGGLE_LABEL_COLUMN if self.kaggle else LABEL_COLUMN

    @property
    def prob_columns(self) -> tuple[str, ...]:
        """One column per class; Bitmoji keeps its single `prob_male` (P(female) is 1 - it)."""
        if self.kaggle:
            return (KAGGLE_PROB_COLUMN,)
        return tuple(PROB_PREFIX + name for name in self.names)

    def prob_values(self, probabilities: np.ndarray) -> np.ndarray:
        """The values of `prob_columns` for (n, len(self)) probabilities: shape (n, columns)."""
        probabilities = np.asarray(probabilities)
        return probabilities[:, 1:2] if self.kaggle else probabilities

    def labels(self, probabilities: np.ndarray) -> list:
        """The `label_column` value per row: Kaggle's 1 / -1 for Bitmoji, else the class name."""
        indices = predicted_indices(probabilities)
        if self.kaggle:
            return [1 if index == 1 else -1 for index in indices]
        return [self.names[index] for index in indices]

    # -- where classes are recorded ------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"names": list(self.names), "kaggle": self.kaggle}

    @classmethod
    def from_dict(cls, recorded: Mapping | None) -> Classes:
        """Classes from a manifest's or checkpoint's `classes` entry; none recorded is Bitmoji."""
        if not recorded:
            return BITMOJI
        return cls(tuple(recorded["names"]), bool(recorded.get("kaggle", False)))

    def to_metadata(self) -> dict[str, str]:
        """ONNX metadata_props entries naming the classes (output i is P(names[i]))."""
        metadata = {META_CLASS_NAMES: json.dumps(list(self.names))}
        if self.kaggle:
            metadata[META_LABEL_MAPPING] = json.dumps({"male": 1, "female": -1})
        return metadata

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Classes:
        """Classes of an exported model; a file from before class names were recorded is Bitmoji."""
        if META_CLASS_NAMES not in metadata:
            return BITMOJI
        try:
            names = json.loads(metadata[META_CLASS_NAMES])
        except json.JSONDecodeError as error:
            raise BitmojiError(f"malformed {META_CLASS_NAMES} metadata ({error})") from error
        return cls(tuple(names), META_LABEL_MAPPING in metadata)


BITMOJI = Classes(BITMOJI_NAMES, kaggle=True)


def predicted_indices(probabilities: np.ndarray) -> np.ndarray:
    """The predicted class index per row of (n, classes) probabilities: the most probable class,
    a tie going to the later class (so two classes keep round 1's rule P(male) >= 0.5 -> male)."""
    probabilities = np.asarray(probabilities)
    last = probabilities.shape[1] - 1
    return last - np.argmax(probabilities[:, ::-1], axis=1)
