"""What every command shares: the common options, declared once; `friendly`, which turns a
BitmojiError into one line on stderr and exit code 1; and `recipe_options`, which gives a
command the recipe's flags, read from the recipe's own declaration (recipe.py)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from bitmoji_ml.errors import BitmojiError, ReportedElsewhere
from bitmoji_ml.recipe import FIELDS, PRESETS, Recipe, facts, resolve_recipe

DataDir = Annotated[
    Path | None,
    typer.Option(
        help="Dataset folder: Kaggle's Bitmoji download, one folder per class, or the images a --labels "
        "CSV names (default: the CSV's folder with --labels, else $BITMOJI_DATA, ../shared/bitmoji, "
        "data/bitmoji)"
    ),
]
ListsDir = Annotated[Path, typer.Option("--lists", help="Folder with the lists from `prepare`")]
Experiment = Annotated[
    str, typer.Option(help="MLflow experiment name (export-onnx registers its models under it too)")
]
# The two columns of a labels CSV of one's own classes (`prepare`'s csv layout, `evaluate --labels`).
ImageColumn = Annotated[
    str | None, typer.Option(help="--labels CSV: the column naming the image file [default: image]")
]
LabelColumn = Annotated[
    str | None, typer.Option(help="--labels CSV: the column holding the class name [default: label]")
]


def friendly(command: Callable) -> Callable:
    """Turn a BitmojiError into a one-line message on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BitmojiError as error:
            if not isinstance(error, ReportedElsewhere):
                typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


RunName = Annotated[str | None, typer.Option(help="MLflow run name (default: model + settings)")]
Preset = Annotated[
    str, typer.Option(help=f"Starting values: {', '.join(PRESETS)} (seed-cnn is the baseline)")
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config", help="TOML file of recipe settings (e.g. a run's recipe.toml, best_config.toml)"
    ),
]


def recipe_parameter(name: str) -> inspect.Parameter:
    """The flag of recipe setting `name`: its help and default from the declaration; None (not
    given) as the value, so that a preset or a config file can set it."""
    field = Recipe.model_fields[name]
    kind = field.annotation if field.annotation in (bool, int, float) else str
    declared = facts(name)["flag"]
    flag = declared or (
        f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}"
        if kind is bool
        else f"--{name.replace('_', '-')}"
    )
    default = ("on" if field.default else "off") if kind is bool else field.default
    text = field.description if declared else f"{field.description} (default: {default})"
    option = typer.Option(flag, help=text, show_default=False)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind | None, option], default=None
    )


def recipe_options(command: str) -> Callable[[Callable], Callable]:
    """Give a command `--preset`, `--config` and a flag per recipe setting that it takes (the
    setting's `commands`), and call it with `recipe=`, the ResolvedRecipe they make (resolved
    once, here: defaults < preset < config file < flags)."""
    names = [name for name in FIELDS if command in facts(name)["commands"]]

    def decorate(function: Callable) -> Callable:
        own = [
            p for p in inspect.signature(function, eval_str=True).parameters.values() if p.name != "recipe"
        ]
        preset = inspect.Parameter(
            "preset", inspect.Parameter.KEYWORD_ONLY, annotation=Preset, default="default"
        )
        config = inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, annotation=ConfigFile, default=None
        )
        parameters = [*own, preset, config, *(recipe_parameter(name) for name in names)]

        @functools.wraps(function)
        def with_recipe(**arguments: Any) -> Any:
            overrides = {name: arguments.pop(name) for name in names}
            recipe = resolve_recipe(arguments.pop("preset"), arguments.pop("config"), overrides)
            return function(recipe=recipe, **arguments)

        with_recipe.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        with_recipe.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_recipe

    return decorate
