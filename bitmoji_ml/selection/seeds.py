"""`bitmoji cv --seeds 0,1,2`: the same cross-validation once per seed, so that a recipe
comparison does not rest on one seed's folds and initialisation.

Each seed is a complete `bitmoji cv` run of its own (its folds as children, its OOF file), so
`audit` and `export-onnx --cv-run` take any of them as they are; the runs of one call share a
`cv_seeds` tag. The summary is the mean and sample std over the seeds of what each cv measured.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.recipe import ResolvedRecipe
from bitmoji_ml.selection.cv import CVResult, cv_config, cv_job
from bitmoji_ml.selection.folds import decode_labelled

if TYPE_CHECKING:
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)
SEEDS_TAG = "cv_seeds"  # on each cv run of one `cv --seeds` call: the seeds, e.g. "0,1,2"
SUMMARISED = ("oof_errors", "oof_acc", "cv_loss", "cv_acc")


@dataclasses.dataclass(frozen=True)
class Spread:
    """One metric over the seeds: mean and sample standard deviation (0 for one seed)."""

    mean: float
    std: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        array = np.asarray(values, dtype=float)
        return cls(float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0)


@dataclasses.dataclass(frozen=True)
class SeedsResult:
    """Each seed's cv run, and the spread of its metrics over the seeds."""

    seeds: list[int]
    runs: list[CVResult]  # in the order of `seeds`
    summary: dict[str, Spread]  # SUMMARISED metric -> mean ± std over the seeds


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` -> [0, 1, 2]; refuses an empty list, a non-integer and a repeated seed."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        seeds = [int(part) for part in parts]
    except ValueError:
        raise BitmojiError(f"--seeds takes comma-separated integers (e.g. 0,1,2), got {text!r}") from None
    if not seeds:
        raise BitmojiError("--seeds needs at least one seed, e.g. --seeds 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise BitmojiError(f"--seeds repeats a seed: {text!r}")
    return seeds


def check_seed_not_given(recipe: ResolvedRecipe) -> None:
    """--seeds sets the seed of each run: a --seed flag as well would be ignored. A seed from
    --config (every recipe.toml and best_config.toml has one) gives way, as to any flag."""
    if "seed" in recipe.flags:
        raise BitmojiError("give --seed or --seeds, not both (--seeds sets each run's seed)")
    if "seed" in recipe.given:
        logger.info("--seeds replaces the seed %d of the preset or config file", recipe.recipe.seed)


def summarise(runs: list[CVResult]) -> dict[str, Spread]:
    """Mean ± std over the runs of the OOF errors and accuracy, cv loss and cv accuracy."""
    return {key: Spread.of([run.metrics[key] for run in runs]) for key in SUMMARISED}


def cv_seeds_job(
    *,
    seeds: list[int],
    lists_dir: Path,
    experiment: str,
    recipe: ResolvedRecipe,
    folds: int = 5,
    run_name: str | None = None,
    store: Store | None = None,
) -> SeedsResult:
    """`cv_job` once per seed (the folds and the training seeded by it), one cv run each,
    named `<name>-seed<n>`; then the spread over the seeds. The images are decoded once: the
    seed changes neither the lists nor the preprocessing."""
    from bitmoji_ml.training.settings import default_run_name

    check_seed_not_given(recipe)
    config = cv_config(recipe)
    base = run_name or f"cv{folds}-{default_run_name(config)}"
    labelled = decode_labelled(lists_dir=lists_dir, config=config)
    tags = {SEEDS_TAG: ",".join(str(seed) for seed in seeds)}
    runs = []
    for seed in seeds:
        seeded = ResolvedRecipe(
            recipe.recipe.replace(seed=seed), recipe.given | {"seed"}, recipe.flags | {"seed"}
        )
        logger.info("seed %d (%d of %d)", seed, len(runs) + 1, len(seeds))
        runs.append(
            cv_job(
                lists_dir=lists_dir,
                experiment=experiment,
                recipe=seeded,
                folds=folds,
                run_name=f"{base}-seed{seed}",
                store=store,
                tags=tags,
                labelled=labelled,
            )
        )
    return SeedsResult(seeds, runs, summarise(runs))
