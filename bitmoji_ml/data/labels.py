"""The label mapping, in one place: Kaggle writes 1 = male, -1 = female; inside we use 1 / 0."""

import numpy as np

CLASS_NAMES = ("female", "male")  # index 0, index 1
KAGGLE_LABELS = {1: 1, -1: 0}  # Kaggle is_male -> class index
MALE_THRESHOLD = 0.5  # P(male) at or above this is "male", everywhere a class is decided


def kaggle_to_index(value: int) -> int:
    """Kaggle `is_male` (1 / -1) to class index (1 / 0)."""
    return KAGGLE_LABELS[value]


def predicted_classes(prob_male: np.ndarray) -> np.ndarray:
    """Class indices (1 male / 0 female) from P(male)."""
    return (np.asarray(prob_male) >= MALE_THRESHOLD).astype(int)


def index_to_kaggle(index: int) -> int:
    """Class index (1 / 0) to Kaggle `is_male` (1 / -1)."""
    return 1 if index == 1 else -1
