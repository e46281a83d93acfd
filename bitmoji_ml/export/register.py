"""Registering an export: one registered version per exported checkpoint (and file format), and
a visible, reasoned decision about `@champion`.

The alias moves on its own only to a model that is at least as good on a comparable metric:
val_acc measured on the same lists (manifest digest). A model that is worse, or that cannot be
compared (a `train --all-labelled` refit has no val_acc; lists changed since the champion was
chosen), is registered but left beside the champion unless `--promote` is given.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from bitmoji_ml.tracking.names import CHAMPION_ALIAS

if TYPE_CHECKING:
    from bitmoji_ml.export.source import ExportSource
    from bitmoji_ml.tracking.records import VersionSummary
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExportedFiles:
    """The files of one export that registration logs, and which one is the champion file."""

    onnx: Path
    report: Path
    champion: Path
    file_format: str  # fp32 or int8: the champion file's
    val_acc: float | None  # the champion file's validation accuracy, None when not measured
    example_image: Path | None = None


@dataclasses.dataclass(frozen=True)
class RegistrationOutcome:
    """The version this export is registered as (of `registered_model`, named after the
    experiment) and what happened to its `@champion`."""

    registered_model: str
    version: str
    reused: bool  # the same checkpoint (and format) was registered before: no new version
    candidate: VersionSummary
    before: VersionSummary | None  # @champion before this export
    moved: bool  # @champion now points at `version` (and did not before)
    reason: str

    @property
    def champion(self) -> str:
        """The version @champion points at after this export."""
        if self.moved or self.before is None:
            return self.version
        return self.before.version


def _acc(summary: VersionSummary) -> str:
    return "no val acc" if summary.val_acc is None else f"val acc {summary.val_acc:.2%}"


def describe(summary: VersionSummary) -> str:
    """`v3 (run 1a2b3c4d, val acc 99.83%)`."""
    return f"v{summary.version} (run {summary.run_id[:8] or '-'}, {_acc(summary)})"


def _not_comparable(before: VersionSummary, candidate: VersionSummary) -> str | None:
    """Why the two val accuracies cannot be compared, or None when they can."""
    if candidate.val_acc is None:
        return "the new model has no val acc to compare (trained without validation, e.g. --all-labelled)"
    if before.val_acc is None:
        return f"v{before.version} has no val acc (trained without validation)"
    if not before.data_digest or before.data_digest != candidate.data_digest:
        return "their val accs were measured on different lists (prepare ran again in between)"
    return None


def champion_choice(
    before: VersionSummary | None, candidate: VersionSummary, promote: bool, *, automatic: str = ""
) -> tuple[bool, str]:
    """Whether `@champion` should move from `before` to `candidate`, and why; a non-empty
    `automatic` says why the candidate may become champion only by --promote."""
    if before is not None and before.version == candidate.version:
        return False, f"v{candidate.version} already is @{CHAMPION_ALIAS}"
    if automatic and not promote:
        return False, f"{automatic}: pass --promote to make it @{CHAMPION_ALIAS}"
    if before is None:
        return True, f"there was no @{CHAMPION_ALIAS} yet"
    if before.checkpoint_sha256 and before.checkpoint_sha256 == candidate.checkpoint_sha256 and not promote:
        # One checkpoint in two formats: their val accs tie by construction, and the file was
        # chosen (e.g. int8 for its speed) when the champion was exported; a re-export keeps it.
        return False, (
            f"v{before.version} holds the same checkpoint ({before.file_format or 'fp32'}), chosen when it "
            f"was exported: pass --promote to make the {candidate.file_format or 'fp32'} file @{CHAMPION_ALIAS}"
        )
    unknown = _not_comparable(before, candidate)
    if promote:
        compared = unknown or f"{_acc(candidate)} vs {_acc(before)} on the same lists"
        return True, f"--promote given ({compared})"
    if unknown:
        return False, f"{unknown}: pass --promote to make it @{CHAMPION_ALIAS}"
    if candidate.val_acc < before.val_acc:
        return False, (
            f"its {_acc(candidate)} is lower than v{before.version}'s {before.val_acc:.2%} on the same "
            f"lists: pass --promote to make it @{CHAMPION_ALIAS} anyway"
        )
    return True, f"{_acc(candidate)} >= {before.val_acc:.2%} of v{before.version} on the same lists"


def register_export(
    store: Store,
    *,
    registered_model: str,
    source: ExportSource,
    files: ExportedFiles,
    known_run: bool,
    promote: bool,
    extra_tags: dict[str, str] | None = None,
    not_automatic: str = "",
) -> RegistrationOutcome | None:
    """Log and register the export as a version of `registered_model` (or find the version of
    an earlier export of the same checkpoint) and move its `@champion` per `champion_choice` (`not_automatic`: only with
    `promote`, for that reason); `extra_tags` go on a new version. None when it cannot be
    registered."""
    if not source.run_id:
        logger.info("not registered: the checkpoint names no MLflow run")
        return None
    if not known_run and not store.run_exists(source.run_id):
        logger.info("not registered: run %s of that checkpoint is not in this store", source.run_id)
        return None
    from bitmoji_ml.tracking import registration

    name = registered_model
    home = registration.run_experiment(store, source.run_id)
    if home != name:  # e.g. --run-id of a `train --experiment digits` run, exported without it
        logger.warning(
            "run %s is in experiment %s but registers as %s (--experiment); pass --experiment %s "
            "to register it with its experiment's models",
            source.run_id,
            home,
            name,
            home,
        )
    before = registration.champion_version(store, registered_model=name)
    existing = registration.find_version(
        store, registered_model=name, checkpoint_sha256=source.sha256, file_format=files.file_format
    )
    if existing is not None:
        candidate, reused = existing, True
    else:
        digest = str(source.payload.get("data_digest", ""))
        draft = registration.VersionSummary(
            "", source.run_id, files.val_acc, digest, files.file_format, source.sha256
        )
        version = registration.log_export(
            store,
            registered_model=name,
            run_id=source.run_id,
            onnx_path=files.onnx,
            report_path=files.report,
            champion_path=files.champion,
            tags={**draft.tags(source.sha256), **(extra_tags or {})},
            example_image=files.example_image,
            val_acc=files.val_acc,
        ).version
        candidate, reused = dataclasses.replace(draft, version=version), False
    move, reason = champion_choice(before, candidate, promote, automatic=not_automatic)
    if move:
        registration.set_champion(store, registered_model=name, version=candidate.version)
    return RegistrationOutcome(name, candidate.version, reused, candidate, before, move, reason)


def registration_lines(outcome: RegistrationOutcome) -> list[str]:
    """What the command prints about the registry: the version, then @champion from -> to."""
    name = outcome.registered_model
    if outcome.reused:
        first = (
            f"already registered: {name} {describe(outcome.candidate)} holds this checkpoint; no new version"
        )
    else:
        first = f"registered {name} {describe(outcome.candidate)}"
    alias = f"@{CHAMPION_ALIAS}"
    if outcome.moved:
        start = "(none)" if outcome.before is None else describe(outcome.before)
        second = f"{alias}: {start} -> {describe(outcome.candidate)}: {outcome.reason}"
    elif outcome.before is not None and outcome.before.version == outcome.version:
        second = f"{alias} stays {describe(outcome.before)}: {outcome.reason}"
    else:
        kept = "(none)" if outcome.before is None else describe(outcome.before)
        second = f"{alias} stays {kept}, not v{outcome.version}: {outcome.reason}"
    return [first, second]
