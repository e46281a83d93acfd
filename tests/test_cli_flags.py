"""The command line uses one name per concept: the flag table in the README is the truth, and
every command's options agree with it."""

from __future__ import annotations

import re

import typer.main
from conftest import ROOT

import cli

RETIRED = {"--out", "--output-dir", "--list"}  # the names of round 1, replaced by the table's


def command_flags() -> dict[str, set[str]]:
    """Command name -> its long option names, read from the Typer app."""
    group = typer.main.get_command(cli.app)
    return {
        name: {opt for param in command.params for opt in param.opts + param.secondary_opts}
        for name, command in group.commands.items()
    }


def readme_table() -> dict[str, set[str]]:
    """Flag -> the commands the README's flag table lists it for."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"\| `(--[a-z-]+)[^`]*` \|.*\| ([a-z, -]+) \|$", line)
        if match:
            rows[match.group(1)] = {name.strip() for name in match.group(2).split(",")}
    return rows


def test_the_readme_flag_table_matches_the_commands():
    flags = command_flags()
    table = readme_table()
    assert {"--lists", "--output", "--labels", "--model", "--run-id", "--experiment"} <= set(table)
    for flag, commands in table.items():
        having = {name for name, options in flags.items() if flag in options}
        assert having == commands, (flag, having, commands)


def test_no_command_uses_a_retired_name():
    for name, options in command_flags().items():
        assert not options & RETIRED, (name, options & RETIRED)
