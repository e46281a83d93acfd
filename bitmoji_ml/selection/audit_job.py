"""`bitmoji audit`: the label audit of a `bitmoji cv` run, from its out-of-fold predictions
(selection/audit.py does the finding), logged back to that run."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bitmoji_ml import paths
from bitmoji_ml.data.classes import Classes
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.selection.audit import (
    LabelIssue,
    face_grid,
    rank_labels,
    write_issues_csv,
)
from bitmoji_ml.selection.oof import read_oof_csv
from bitmoji_ml.tracking.names import (
    CV_RUN,
    IMAGE_FOLDER_TAG,
    LABEL_ISSUES_CSV,
    LABEL_ISSUES_PNG,
    OOF_PREDICTIONS,
)

if TYPE_CHECKING:
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """The ranked label issues of one CV run and where the files went."""

    run_id: str
    images: int  # labelled images the CV run predicted out of fold
    issues: list[LabelIssue]  # flagged by cleanlab: label_issues.csv
    ranked: list[LabelIssue]  # the issues, then the least trusted other labels, `top` at least
    issues_csv: Path  # label_issues.csv in the output folder, absolute
    faces_png: Path  # label_issues.png beside it
    classes: Classes  # those of the cv run's out-of-fold predictions


def audit_job(
    *, store: Store, experiment: str, run_id: str | None = None, top: int = 24, output: Path = paths.AUDIT_DIR
) -> AuditResult:
    """Rank the CV run's likely label errors (default run: the experiment's newest finished
    `cv` run); write label_issues.csv (every issue cleanlab flags) and label_issues.png (the
    `top` least trusted labels, flagged ones first) into `output`, where a person can open
    them, and log both to the run."""
    from bitmoji_ml.tracking.parents import add_results, download_run_file, newest_run_of_kind, run_tag

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise BitmojiError(f"--output {output} is a file: give a folder for label_issues.csv and .png")
    run_id = run_id or newest_run_of_kind(store, experiment=experiment, kind=CV_RUN)
    with tempfile.TemporaryDirectory(prefix="bitmoji-audit-") as scratch:
        folder = Path(scratch)
        oof_path = download_run_file(
            store, run_id=run_id, artifact=OOF_PREDICTIONS, folder=folder / "download", kind=CV_RUN
        )
        folder_tag = run_tag(store, run_id=run_id, key=IMAGE_FOLDER_TAG)  # none: absolute names
        oof = read_oof_csv(oof_path, folder=Path(folder_tag) if folder_tag else None)
        ranked = rank_labels(oof, top=top)
        issues = [issue for issue in ranked if issue.flagged]
        files = [folder / LABEL_ISSUES_CSV, folder / LABEL_ISSUES_PNG]
        write_issues_csv(issues, files[0], oof.classes)
        face_grid(ranked, files[1], limit=top, classes=oof.classes)
        add_results(store, run_id=run_id, files=files, metrics={"label_issues": len(issues)})
        issues_csv, faces_png = _copy_into(files, output)
    logger.info("logged %s to run %s", ", ".join(path.name for path in files), run_id)
    return AuditResult(run_id, len(oof.images), issues, ranked, issues_csv, faces_png, oof.classes)


def _copy_into(files: list[Path], output: Path) -> list[Path]:
    """Copy `files` into the folder `output` (created), each replaced atomically; returns the
    copies' absolute paths (what the command prints)."""
    from bitmoji_ml.files import atomic_path

    output.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in files:
        with atomic_path(output / path.name) as tmp:
            shutil.copyfile(path, tmp)
        copies.append((output / path.name).resolve())
    return copies
