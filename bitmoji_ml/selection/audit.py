"""Label audit: which labelled images are likely mislabelled, judged from out-of-fold
probabilities (selection/oof.py) with cleanlab (confident learning, any number of classes), as
a ranked table, a CSV and a face grid."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from bitmoji_ml.data.classes import BITMOJI, KAGGLE_PROB_COLUMN, Classes, predicted_indices
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import atomic_path
from bitmoji_ml.selection.oof import OutOfFold

PROB_FLOOR = 1e-6  # cleanlab divides by probabilities: none exactly 0


def issue_columns(classes: Classes) -> tuple[str, ...]:
    """label_issues.csv's columns: Bitmoji keeps round 1's; others add the suggested label."""
    if classes.kaggle:
        return ("rank", "image_id", "image", "label", KAGGLE_PROB_COLUMN, "label_quality", "fold")
    return ("rank", "image_id", "image", "label", "suggested", *classes.prob_columns, "label_quality", "fold")


@dataclasses.dataclass(frozen=True)
class LabelIssue:
    """An image whose given label disagrees with what the other folds' models learned."""

    rank: int
    image: str
    label: int
    probabilities: tuple[float, ...]  # out of fold, one per class
    label_quality: float  # cleanlab's self-confidence: P(given label); low = suspicious
    fold: int
    flagged: bool = True  # cleanlab's filter calls it an issue (else: only among the least confident)

    @property
    def image_id(self) -> str:
        return Path(self.image).name

    @property
    def suggested(self) -> int:
        """The class the out-of-fold models found most probable."""
        return int(predicted_indices(np.array([self.probabilities]))[0])


def _pred_probs(oof: OutOfFold) -> np.ndarray:
    """The probabilities cleanlab reads: none exactly 0 (two classes: round 1's clipping)."""
    if len(set(oof.labels.tolist())) < 2:
        raise BitmojiError("the audit needs images of at least two classes")
    if len(oof.classes) == 2:
        prob = np.clip(oof.probabilities[:, 1], PROB_FLOOR, 1 - PROB_FLOOR)
        return np.stack([1 - prob, prob], axis=1)
    floored = np.clip(oof.probabilities, PROB_FLOOR, None)
    return floored / floored.sum(axis=1, keepdims=True)


def _issue(oof: OutOfFold, index: int, rank: int, quality: float, flagged: bool) -> LabelIssue:
    return LabelIssue(
        rank=rank,
        image=oof.images[index],
        label=int(oof.labels[index]),
        probabilities=tuple(float(prob) for prob in oof.probabilities[index]),
        label_quality=float(quality),
        fold=int(oof.folds[index]),
        flagged=flagged,
    )


def find_label_issues(oof: OutOfFold) -> list[LabelIssue]:
    """cleanlab's confident-learning label issues, most suspicious first."""
    from cleanlab.filter import find_label_issues as cleanlab_label_issues

    pred_probs = _pred_probs(oof)
    # n_jobs=1: cleanlab's default forks a multiprocessing pool, and a fork of a process whose
    # torch/onnxruntime threads hold locks can hang forever (it did in the test suite). For
    # a few classes and thousands of rows the pool buys nothing.
    ranked = cleanlab_label_issues(
        oof.labels,
        pred_probs,
        return_indices_ranked_by="self_confidence",
        filter_by="prune_by_noise_rate",
        n_jobs=1,
    )
    return [
        _issue(oof, index, rank, pred_probs[index, oof.labels[index]], True)
        for rank, index in enumerate(ranked, start=1)
    ]


def rank_labels(oof: OutOfFold, *, top: int) -> list[LabelIssue]:
    """The label issues, then (up to `top` in all) the other images whose given label the
    out-of-fold models trusted least (cleanlab's self-confidence label quality, lowest first),
    marked `flagged=False`: candidates for a person to look at, not verdicts."""
    from cleanlab.rank import get_label_quality_scores

    issues = find_label_issues(oof)
    quality = get_label_quality_scores(oof.labels, _pred_probs(oof), method="self_confidence")
    found = {issue.image for issue in issues}
    others = [int(index) for index in np.argsort(quality, kind="stable") if oof.images[index] not in found]
    extra = others[: max(0, top - len(issues))]
    start = len(issues) + 1
    return issues + [
        _issue(oof, index, rank, quality[index], False) for rank, index in enumerate(extra, start)
    ]


def _issue_row(issue: LabelIssue, classes: Classes) -> list:
    names = classes.names
    probabilities = [f"{prob:.6f}" for prob in classes.prob_values(np.array([issue.probabilities]))[0]]
    suggested = [] if classes.kaggle else [names[issue.suggested]]
    return [
        issue.rank,
        issue.image_id,
        issue.image,
        names[issue.label],
        *suggested,
        *probabilities,
        f"{issue.label_quality:.6f}",
        issue.fold,
    ]


def write_issues_csv(issues: list[LabelIssue], path: Path, classes: Classes = BITMOJI) -> None:
    """The ranked issues as CSV, the given and suggested labels as class names; its `image_id`
    column is what `prepare --exclude` reads."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(issue_columns(classes))
        writer.writerows(_issue_row(issue, classes) for issue in issues)


def issue_caption(issue: LabelIssue, classes: Classes) -> str:
    """`<image id>` over `label X, P(X) 0.03` over `suggested Y`."""
    given, suggested = classes.names[issue.label], classes.names[issue.suggested]
    return f"{issue.image_id}\nlabel {given}, P({given}) {issue.label_quality:.2f}\nsuggested {suggested}"


def face_grid(issues: list[LabelIssue], path: Path, limit: int = 24, classes: Classes = BITMOJI) -> None:
    """The most suspicious images, each titled with its id, given label, the probability the
    out-of-fold models gave it, and the class they found most probable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    shown = issues[:limit] or []
    columns = min(6, max(1, len(shown)))
    rows = max(1, -(-len(shown) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.9 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, issue in zip(axes.flat, shown, strict=False):
        try:
            with Image.open(issue.image) as image:
                axis.imshow(image.convert("RGB"))
        except OSError:
            axis.text(0.5, 0.5, "unreadable", ha="center", va="center")
        axis.set_title(
            issue_caption(issue, classes), fontsize=8, color="firebrick" if issue.flagged else "black"
        )
    if not shown:
        axes.flat[0].text(0.5, 0.5, "no label issues found", ha="center", va="center")
    title = "Least trusted labels, out-of-fold (red: flagged as label issues by cleanlab)"
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
