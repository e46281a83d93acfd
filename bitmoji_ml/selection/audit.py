"""Label audit: which labelled images are likely mislabelled, judged from out-of-fold
probabilities with cleanlab (confident learning), as a ranked table, a CSV and a face grid."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from bitmoji_ml.data.labels import CLASS_NAMES
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import atomic_path

OOF_COLUMNS = ("image", "label", "prob_male", "fold")
ISSUE_COLUMNS = ("rank", "image_id", "image", "label", "prob_male", "label_quality", "fold")


@dataclasses.dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions of a cross-validation: one row per labelled image."""

    images: list[str]
    labels: np.ndarray  # 1 male / 0 female
    prob_male: np.ndarray
    folds: np.ndarray


@dataclasses.dataclass(frozen=True)
class LabelIssue:
    """An image whose given label disagrees with what the other folds' models learned."""

    rank: int
    image: str
    label: int
    prob_male: float
    label_quality: float  # cleanlab's self-confidence: P(given label); low = suspicious
    fold: int
    flagged: bool = True  # cleanlab's filter calls it an issue (else: only among the least confident)

    @property
    def image_id(self) -> str:
        return Path(self.image).name


def write_oof_csv(oof: OutOfFold, path: Path) -> None:
    """`image,label,prob_male,fold` rows, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(OOF_COLUMNS)
        for row in zip(oof.images, oof.labels, oof.prob_male, oof.folds, strict=True):
            writer.writerow([row[0], int(row[1]), f"{float(row[2]):.6f}", int(row[3])])


def read_oof_csv(path: Path) -> OutOfFold:
    """Parse `write_oof_csv`'s file; a clear error for any other file."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != OOF_COLUMNS:
            raise BitmojiError(f"{path} is not an out-of-fold file (columns {', '.join(OOF_COLUMNS)})")
        rows = list(reader)
    if not rows:
        raise BitmojiError(f"{path} has no rows")
    try:
        return OutOfFold(
            images=[row["image"] for row in rows],
            labels=np.array([int(row["label"]) for row in rows]),
            prob_male=np.array([float(row["prob_male"]) for row in rows]),
            folds=np.array([int(row["fold"]) for row in rows]),
        )
    except ValueError as error:
        raise BitmojiError(f"{path}: malformed row ({error})") from error


def _pred_probs(oof: OutOfFold) -> np.ndarray:
    if len(set(oof.labels.tolist())) < 2:
        raise BitmojiError("the audit needs images of both classes")
    prob = np.clip(oof.prob_male.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.stack([1 - prob, prob], axis=1)


def _issue(oof: OutOfFold, index: int, rank: int, quality: float, flagged: bool) -> LabelIssue:
    return LabelIssue(
        rank=rank,
        image=oof.images[index],
        label=int(oof.labels[index]),
        prob_male=float(oof.prob_male[index]),
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
    # two classes and thousands of rows the pool buys nothing.
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


def write_issues_csv(issues: list[LabelIssue], path: Path) -> None:
    """The ranked issues as CSV; its `image_id` column is what `prepare --exclude` reads."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(ISSUE_COLUMNS)
        for issue in issues:
            writer.writerow(
                [
                    issue.rank,
                    issue.image_id,
                    issue.image,
                    CLASS_NAMES[issue.label],
                    f"{issue.prob_male:.6f}",
                    f"{issue.label_quality:.6f}",
                    issue.fold,
                ]
            )


def face_grid(issues: list[LabelIssue], path: Path, limit: int = 24) -> None:
    """The most suspicious faces, each titled with its id, given label and P(male)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    shown = issues[:limit] or []
    columns = min(6, max(1, len(shown)))
    rows = max(1, -(-len(shown) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, issue in zip(axes.flat, shown, strict=False):
        try:
            with Image.open(issue.image) as image:
                axis.imshow(image.convert("RGB"))
        except OSError:
            axis.text(0.5, 0.5, "unreadable", ha="center", va="center")
        axis.set_title(
            f"{issue.image_id}\nlabel {CLASS_NAMES[issue.label]}, P(male) {issue.prob_male:.2f}",
            fontsize=8,
            color="firebrick" if issue.flagged else "black",
        )
    if not shown:
        axes.flat[0].text(0.5, 0.5, "no label issues found", ha="center", va="center")
    title = "Least trusted labels, out-of-fold (red: flagged as label issues by cleanlab)"
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
