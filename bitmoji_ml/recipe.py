"""The training recipe: every setting that decides a training run, declared once.

Each field of `Recipe` says its type, default, bounds or choices, help text (the CLI flag's),
what `--resume` may do with it (`Rule`), whether `tune` searches it and in which range, and
which commands take it as a flag. pydantic validates values from every source (flags, TOML
files, checkpoints, Optuna trials) the same way. `resolve_recipe` layers them once:
defaults < `--preset` < `--config` TOML < flags, into one frozen `ResolvedRecipe` that every job
receives; each run logs it as `recipe.toml`, which `--config` reads back.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bitmoji_ml.errors import BitmojiError

RECIPE_FILE = "recipe.toml"  # the artifact every run logs; `--config recipe.toml` reads it back


class Rule(enum.Enum):
    """What `--resume` does with a setting."""

    MATCH = "must match the checkpoint"
    CONTINUE = "the checkpoint's value unless given"
    MACHINE = "this command's value (default if not given), never the checkpoint's"


ALL_COMMANDS = ("train", "cv", "tune")


def setting(
    default: Any,
    help: str,
    *,
    resume: Rule = Rule.MATCH,
    search: tuple[str, tuple] | None = None,
    commands: tuple[str, ...] = ALL_COMMANDS,
    flag: str | None = None,
    **bounds: Any,
) -> Any:
    """A recipe field: pydantic's Field with this project's facts about it in `json_schema_extra`.
    `search` is (kind, arguments) with kind log-float, float, int or choice; `flag` overrides the
    CLI flag's declaration (e.g. a switch with no --no- form)."""
    facts = {"resume": resume, "search": search, "commands": commands, "flag": flag}
    return Field(default, description=help, json_schema_extra=facts, **bounds)  # type: ignore[arg-type]


class Recipe(BaseModel):
    """Everything that decides a training run. Every field is logged as an MLflow param."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = setting("hybrid", "hybrid, separable, compact, seed-cnn or resnet18")
    image_size: int = setting(
        0, "Input side in pixels, 0 = the model's", ge=0, search=("choice", (56, 64, 72, 80))
    )
    epochs: int = setting(16, "Training epochs", gt=0, resume=Rule.CONTINUE, search=("int", (10, 30)))
    batch_size: int = setting(64, "Images per step", gt=0)
    optimizer: Literal["adamw", "sgd"] = setting("adamw", "adamw or sgd")
    lr: float = setting(2e-3, "Peak learning rate", gt=0, search=("log-float", (5e-4, 1e-2)))
    momentum: float = setting(0.9, "SGD momentum (and AdamW's beta1)", ge=0)
    weight_decay: float = setting(5e-4, "Weight decay", ge=0, search=("log-float", (1e-5, 5e-3)))
    schedule: Literal["onecycle", "cosine", "constant"] = setting("onecycle", "onecycle, cosine or constant")
    label_smoothing: float = setting(0.1, "Label smoothing", ge=0, search=("float", (0.0, 0.2)))
    ema: float = setting(0.99, "Decay of the weight average that is evaluated and saved, 0 = off", ge=0, lt=1)
    patience: int = setting(
        0,
        "Early-stop after N epochs without a better val_acc, 0 = off",
        ge=0,
        resume=Rule.CONTINUE,
        commands=("train", "tune"),
    )
    seed: int = setting(0, "Random seed (in cv also of the split into folds)")
    device: Literal["auto", "cpu", "cuda", "mps"] = setting(
        "auto", "auto, cpu, cuda or mps", resume=Rule.MACHINE
    )
    threads: int = setting(0, "CPU threads per process, 0 = all cores", ge=0, resume=Rule.MACHINE)
    flip: bool = setting(True, "Random horizontal flips")
    shift: float = setting(
        0.08, "Max random shift, fraction of the side", ge=0, lt=0.5, search=("float", (0.0, 0.15))
    )
    scale: float = setting(0.08, "Max random zoom, fraction", ge=0, lt=1, search=("float", (0.0, 0.15)))
    jitter: float = setting(0.2, "Colour jitter strength", ge=0, lt=1, search=("float", (0.0, 0.4)))
    disk_cache: bool = setting(False, "Keep decoded images in data/cache/", resume=Rule.MACHINE)
    width: float = setting(
        1.0,
        "Model channel-width multiplier (hybrid, separable, compact)",
        gt=0,
        search=("choice", (0.5, 0.75, 1.0)),
    )
    all_labelled: bool = setting(
        False,
        "Train on train + val for the fixed epochs, no validation: the last epoch is the model (the "
        "final refit once `cv`/`tune` chose the recipe; export it with --run-id)",
        commands=("train",),
        flag="--all-labelled",
    )
    teacher: str = setting(
        "",
        "ONNX model (e.g. `export-onnx --cv-run`'s ensemble) whose class probabilities for the train "
        "images the model learns (distillation), mixed with the labels by --teacher-weight",
        commands=("train",),
    )
    teacher_weight: float = setting(
        1.0,
        "With --teacher: the teacher's share of the targets, the rest the one-hot labels",
        ge=0,
        le=1,
        commands=("train",),
    )
    # With several CUDA processes: BatchNorm statistics over the whole global batch
    # (SyncBatchNorm) instead of each process's share. SyncBatchNorm does not run on CPU.
    sync_batchnorm: bool = setting(
        False,
        "With --nproc on CUDA: BatchNorm statistics over all processes (SyncBatchNorm)",
        resume=Rule.MACHINE,
        commands=("train",),
    )

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, values: Any) -> Any:
        """pydantic would read `true` as 1 for a number; a recipe that says so is a mistake."""
        if isinstance(values, dict):
            for key, value in values.items():
                field = cls.model_fields.get(key)
                if isinstance(value, bool) and field is not None and field.annotation in (int, float):
                    raise ValueError(
                        f"{key}={value!r}: true/false where a number ({field.annotation.__name__}) is expected"
                    )
        return values

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.all_labelled and self.patience:
            raise ValueError(
                "--all-labelled trains without validation, so --patience (early stopping on val_acc) "
                "cannot apply: set patience to 0"
            )
        if self.teacher_weight != 1.0 and not self.teacher:
            raise ValueError("--teacher-weight applies only with --teacher (an ONNX model to distil)")
        return self

    def values(self) -> dict[str, Any]:
        """Every setting, in declaration order."""
        return self.model_dump()

    def to_params(self) -> dict[str, str]:
        """Flat, stably named MLflow params."""
        return {key: str(value) for key, value in self.values().items()}

    def replace(self, **changes: Any) -> Recipe:
        """A copy with `changes`, validated like any other recipe."""
        return recipe_from_values({**self.values(), **changes})

    def recipe_values(self) -> dict[str, Any]:
        """The settings that make the recipe, without the machine's (device, threads, disk cache)
        and the command's (--all-labelled): what a recipe file holds."""
        return {key: value for key, value in self.values().items() if key not in NOT_RECIPE}


def facts(name: str) -> dict[str, Any]:
    """The project's facts about field `name` (resume rule, search range, commands, flag)."""
    return Recipe.model_fields[name].json_schema_extra  # type: ignore[return-value]


FIELDS = tuple(Recipe.model_fields)
RESUME_POLICY: dict[str, Rule] = {name: facts(name)["resume"] for name in FIELDS}
SEARCH_SPACE: dict[str, tuple[str, tuple]] = {
    name: facts(name)["search"] for name in FIELDS if facts(name)["search"] is not None
}
# Settings a recipe file leaves to the machine (and to the command: --all-labelled).
NOT_RECIPE = frozenset(name for name, rule in RESUME_POLICY.items() if rule is Rule.MACHINE) | {
    "all_labelled"
}

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The published baseline: plain SGD at batch 4 for 10 epochs, no augmentation.
    "seed-cnn": {
        "model": "seed-cnn",
        "epochs": 10,
        "batch_size": 4,
        "optimizer": "sgd",
        "lr": 1e-4,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "schedule": "constant",
        "label_smoothing": 0.0,
        "ema": 0.0,
        "flip": False,
        "shift": 0.0,
        "scale": 0.0,
        "jitter": 0.0,
    },
    "resnet18": {"model": "resnet18", "epochs": 12, "lr": 2e-3, "batch_size": 64},
}


@dataclasses.dataclass(frozen=True)
class ResolvedRecipe:
    """The recipe a command asked for, resolved once, and which settings were asked for
    (preset, file or flag): `--resume` keeps the checkpoint's value of the others, `tune`
    searches the others."""

    recipe: Recipe
    given: frozenset[str]
    flags: frozenset[str] = frozenset()  # those of `given` set by a flag (not a preset or file)

    def given_values(self) -> dict[str, Any]:
        """The settings that were asked for, with their values."""
        values = self.recipe.values()
        return {name: values[name] for name in FIELDS if name in self.given}


def resolve_recipe(
    preset: str = "default",
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> ResolvedRecipe:
    """Defaults, then the preset, then the TOML file, then the flags (None: not given)."""
    requested = requested_values(preset, config_file, overrides)
    flags = frozenset(key for key, value in (overrides or {}).items() if value is not None)
    return ResolvedRecipe(recipe_from_values(requested), frozenset(requested), flags)


def requested_values(
    preset: str = "default",
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The values the preset, the TOML file and the overrides set, later ones winning."""
    if preset not in PRESETS:
        raise BitmojiError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    values: dict[str, Any] = dict(PRESETS[preset])
    if config_file is not None:
        values.update(read_recipe_file(Path(config_file)))
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return values


def read_recipe_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML file (a `recipe.toml`, `best_config.toml` or one a person wrote)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise BitmojiError(f"config file {path} not found") from error
    except tomllib.TOMLDecodeError as error:
        raise BitmojiError(f"config file {path} is not valid TOML: {error}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise BitmojiError(f"cannot read config file {path}: {error}") from error


def recipe_from_values(values: dict[str, Any]) -> Recipe:
    """A Recipe from plain values; unknown keys, bad types, choices and bounds are refused with
    a message naming each key."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise BitmojiError(f"unknown config key(s): {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    try:
        return Recipe(**values)
    except ValidationError as error:
        raise BitmojiError("; ".join(_describe(problem) for problem in error.errors())) from None


def _describe(problem: Any) -> str:
    """One pydantic problem in the words of this project: the key, the value, what is allowed."""
    key = ".".join(str(part) for part in problem["loc"])
    bounds = problem.get("ctx") or {}
    if problem["type"] == "greater_than" and bounds.get("gt") == 0:
        return f"{key} must be positive, got {problem['input']!r}"
    if not key:  # a check across settings
        return str(problem["msg"]).removeprefix("Value error, ")
    return f"{key}={problem['input']!r}: {str(problem['msg']).removeprefix('Value error, ')}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string for plain text


def recipe_toml(values: dict[str, Any], comments: list[str]) -> str:
    """`values` as a TOML file of recipe keys (what `--config` reads)."""
    lines = [f"# {comment}" for comment in comments]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"
