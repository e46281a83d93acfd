"""`bitmoji tune`: an Optuna study over the recipe (TPE sampler, median pruner on per-epoch
validation accuracy), stored in an SQLite file beside the MLflow store so that a study can be
continued by name. One MLflow parent run per command, one child run per trial (with --cv a
trial is itself a cross-validation, its folds nested one level deeper).

Objective: the best epoch's val_acc, val_loss as tie-break (as `train` selects its best.pt),
or with --cv the cross-validated cv_acc, cv_loss as tie-break (search.objective_value).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitmoji_ml import paths
from bitmoji_ml.data.lists import manifest_classes, read_manifest
from bitmoji_ml.errors import BitmojiError
from bitmoji_ml.files import write_text_atomic
from bitmoji_ml.recipe import SEARCH_SPACE, ResolvedRecipe, recipe_from_values, recipe_toml
from bitmoji_ml.selection.search import searched_settings
from bitmoji_ml.selection.trials import TrialRunner
from bitmoji_ml.tracking.names import BEST_CONFIG, TUNE_RUN, classes_param
from bitmoji_ml.training.settings import resolve_config, use_cpu

if TYPE_CHECKING:
    import optuna

    from bitmoji_ml.tracking.parents import ParentRun
    from bitmoji_ml.tracking.store import Store

logger = logging.getLogger(__name__)
SQLITE_PREFIX = "sqlite:///"
OPTUNA_FILE = "optuna.db"
# No pruning in the first two tenths of a trial's schedule (progress steps, trials.progress_step):
# early epochs say little.
PRUNER_WARMUP_STEPS = 2
PRUNER_STARTUP_TRIALS = 4  # nor before this many trials have finished


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """What `bitmoji tune` reports."""

    run_id: str
    study: str
    storage: str
    objective: str
    searched: list[str]
    trials_run: int  # by this command
    trials_total: int  # in the study (a continued study counts earlier commands' trials)
    best_trial: int
    best_value: float
    best_metrics: dict[str, float]
    best_recipe: dict[str, Any]
    config_path: Path


def optuna_storage(store_uri: str) -> str:
    """The study file: beside an SQLite MLflow store's database, else mlruns/optuna.db."""
    if store_uri.startswith(SQLITE_PREFIX):
        folder = Path(store_uri[len(SQLITE_PREFIX) :]).parent
    else:
        folder = paths.MLRUNS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE_PREFIX}{(folder / OPTUNA_FILE).resolve()}"


def objective_name(use_cv: bool) -> str:
    return "cv_acc, cv_loss tie-break" if use_cv else "val_acc, val_loss tie-break"


def open_study(*, name: str, storage: str, objective: str, seed: int) -> optuna.Study:
    """The study `name` in `storage`, created or continued; a continued study must have been
    created with the same objective."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_STEPS
        ),
        load_if_exists=True,
    )
    saved = study.user_attrs.get("objective")
    if saved is None:
        study.set_user_attr("objective", objective)
    elif saved != objective:
        raise BitmojiError(
            f"study {name!r} optimises {saved!r}, not {objective!r}: use the same --cv setting or "
            "another --study name"
        )
    # A continued study must not replay the same random start-up points: seed by its size.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    """What one `bitmoji tune` command runs: which study, scored how, searching what."""

    study: str
    storage: str
    objective: str
    requested: dict[str, Any]  # fixed by the preset, the config file and the flags
    searched: list[str]
    trials: int
    timeout: float | None
    folds: int  # 0: train on the lists; else cross-validate each trial


def tune_settings(
    *,
    store_uri: str,
    experiment: str,
    study: str | None,
    use_cv: bool,
    folds: int,
    trials: int,
    timeout: float | None,
    requested: dict[str, Any],
) -> TuneSettings:
    """The command's settings, checked before anything runs."""
    if trials < 1:
        raise BitmojiError(f"--trials must be at least 1, got {trials}")
    base = recipe_from_values(requested)
    searched = searched_settings(fixed=set(requested), model=base.model)
    if not searched:
        raise BitmojiError(
            f"every setting tune searches is fixed ({', '.join(SEARCH_SPACE)}): nothing to tune"
        )
    return TuneSettings(
        study or f"{experiment}-tune",
        optuna_storage(store_uri),
        objective_name(use_cv),
        requested,
        searched,
        trials,
        timeout,
        folds if use_cv else 0,
    )


def tune_job(
    *,
    lists_dir: Path,
    experiment: str,
    trials: int,
    timeout: float | None = None,
    use_cv: bool = False,
    folds: int = 5,
    study_name: str | None = None,
    recipe: ResolvedRecipe,
    output: Path = Path(BEST_CONFIG),
    run_name: str | None = None,
    store: Store | None = None,
) -> TuneResult:
    """`bitmoji tune`: run `trials` new trials (or until `timeout` seconds) of the study, each
    a child run; log the best trial to the parent and write its recipe to `output`."""

    from bitmoji_ml.tracking.parents import ParentRun
    from bitmoji_ml.tracking.store import Store
    from bitmoji_ml.training.termination import sigterm_ends_run

    store = store or Store.open()
    experiment_id = store.experiment_id(experiment)
    requested = recipe.given_values()
    settings = tune_settings(
        store_uri=store.uri,
        experiment=experiment,
        study=study_name,
        use_cv=use_cv,
        folds=folds,
        trials=trials,
        timeout=timeout,
        requested=requested,
    )
    base = resolve_config(recipe.recipe)  # the seed, and the threads used here
    classes = manifest_classes(read_manifest(lists_dir))  # missing lists fail before the study opens
    study = open_study(
        name=settings.study, storage=settings.storage, objective=settings.objective, seed=base.seed
    )
    use_cpu(base.threads)
    name = run_name or f"tune-{settings.study}-{len(study.trials)}"
    # SIGTERM ends the parent and the running child as KILLED, as Ctrl-C does.
    with (
        sigterm_ends_run(),
        ParentRun(store, experiment_id=experiment_id, run_name=name, kind=TUNE_RUN) as parent,
    ):
        logger.info(
            "MLflow run %s (%s); study %r in %s", parent.run_id, store.uri, settings.study, settings.storage
        )
        log_tune_start(parent, settings)
        parent.log_params(classes_param(classes.names))
        runner = TrialRunner(
            store=store,
            experiment_id=experiment_id,
            parent=(parent.run_id, name),
            lists_dir=Path(lists_dir),
            requested=requested,
            searched=settings.searched,
            folds=settings.folds,
        )
        before = len(study.trials)
        study.optimize(runner, n_trials=settings.trials, timeout=settings.timeout, catch=())
        return best_of(
            study, parent=parent, output=output, settings=settings, trials_run=len(study.trials) - before
        )


def log_tune_start(parent: ParentRun, settings: TuneSettings) -> None:
    """What the study optimises and over what, as the parent run's params."""
    space = {name: SEARCH_SPACE[name] for name in settings.searched}
    fixed = {f"fixed.{key}": value for key, value in settings.requested.items()}
    parent.log_params(
        {
            "objective": settings.objective,
            "study": settings.study,
            "trials": settings.trials,
            "timeout": settings.timeout,
            "cv_folds": settings.folds,
            "search_space": repr(space),
            **fixed,
        }
    )
    parent.log_tags({"optuna_study": settings.study, "optuna_storage": settings.storage})


def best_of(
    study: optuna.Study, *, parent: ParentRun, output: Path, settings: TuneSettings, trials_run: int
) -> TuneResult:
    """The study's best trial so far: logged to the parent, its recipe written to `output`."""
    import optuna

    if not study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        raise BitmojiError(f"no trial of study {study.study_name!r} has completed yet (all pruned or failed)")
    best = study.best_trial
    metrics = {key: float(value) for key, value in best.user_attrs.get("metrics", {}).items()}
    recipe = dict(best.user_attrs["recipe"])
    write_best_config(study, best, metrics, output=output, parent=parent)
    parent.log_metrics(
        {
            "best_value": best.value,
            "best_trial": best.number,
            "trials_total": len(study.trials),
            # best_trial_*, not best_val_*: a tune run must not sort among training runs by them
            **{f"best_trial_{key}": value for key, value in metrics.items()},
        }
    )
    parent.log_params({f"best.{key}": recipe[key] for key in best.params})
    parent.log_tags({"best_trial_run_id": best.user_attrs.get("run_id", "")})
    return TuneResult(
        run_id=parent.run_id,
        study=study.study_name,
        storage=settings.storage,
        objective=settings.objective,
        searched=settings.searched,
        trials_run=trials_run,
        trials_total=len(study.trials),
        best_trial=best.number,
        best_value=float(best.value),
        best_metrics=metrics,
        best_recipe=recipe,
        config_path=output,
    )


def write_best_config(
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    metrics: dict[str, float],
    *,
    output: Path,
    parent: ParentRun,
) -> None:
    """The best trial's recipe as TOML: written to `output`, logged to the parent as best_config.toml."""
    text = recipe_toml(
        dict(best.user_attrs["recipe"]),
        [
            f"bitmoji tune: best trial {best.number} of study {study.study_name!r} ({len(study.trials)} trials)",
            f"objective {study.user_attrs.get('objective')}: {best.value:.6f}; "
            + ", ".join(f"{key} {value:.6g}" for key, value in metrics.items()),
            f"MLflow run of the trial: {best.user_attrs.get('run_id', '?')}",
        ],
    )
    write_text_atomic(output, text)
    with tempfile.TemporaryDirectory(prefix="bitmoji-tune-") as folder:
        write_text_atomic(Path(folder) / BEST_CONFIG, text)  # logged under one name, wherever written
        parent.log_artifact(Path(folder) / BEST_CONFIG)
