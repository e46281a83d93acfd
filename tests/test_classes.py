"""The class names contract: validation, output columns, labels and where classes are recorded."""

import numpy as np
import pytest

from bitmoji_ml.data.classes import BITMOJI, Classes, check_class_names, predicted_indices
from bitmoji_ml.errors import BitmojiError


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["cat"], "two or more classes"),
        ([], "two or more classes"),
        (["cat", "cat", "dog"], "'cat' appear twice"),
        (["golden retriever", "cat"], "'golden retriever'"),
        (["a,b", "c"], "'a,b'"),
        (["café", "tea"], "'café'"),
    ],
)
def test_bad_class_names_are_named(names, message):
    with pytest.raises(BitmojiError, match=message):
        check_class_names(names)


def test_bitmoji_keeps_its_kaggle_columns():
    probabilities = np.array([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    assert BITMOJI.prob_columns == ("prob_male",)
    assert BITMOJI.label_column == "is_male"
    assert BITMOJI.labels(probabilities) == [1, 1, -1]  # a tie is male, as P(male) >= 0.5 was
    assert BITMOJI.prob_values(probabilities)[:, 0].tolist() == [0.8, 0.5, 0.1]


def test_other_classes_get_one_column_each_and_names_as_labels():
    classes = Classes(("cat", "dog", "fox"))
    probabilities = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    assert classes.prob_columns == ("prob_cat", "prob_dog", "prob_fox")
    assert classes.label_column == "label"
    assert classes.labels(probabilities) == ["fox", "cat"]
    assert predicted_indices(probabilities).tolist() == [2, 0]


def test_classes_round_trip_and_old_records_are_bitmoji():
    classes = Classes(("0", "1", "2"))
    assert Classes.from_dict(classes.to_dict()) == classes
    assert Classes.from_metadata(classes.to_metadata()) == classes
    assert Classes.from_metadata(BITMOJI.to_metadata()) == BITMOJI
    assert Classes.from_dict(None) == BITMOJI
    assert Classes.from_metadata({"bitmoji.preprocess": "{}"}) == BITMOJI
    # a user's own female/male folders are not Kaggle's labels
    assert Classes(("female", "male")).prob_columns == ("prob_female", "prob_male")
