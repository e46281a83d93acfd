"""The shape the architecture doc promises: no module over the size guide, no import cycle
between bitmoji_ml's modules, and no import that points back up the flow (the command layer
is imported by nobody in the library)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "bitmoji_ml"
LINE_LIMIT = 360  # the guide says ~350


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The bitmoji_ml modules `path` imports, anywhere in it (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bitmoji_ml"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("bitmoji_ml"))
    return found


def module_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()
    }


def test_no_module_is_over_the_size_guide():
    sizes = {
        module_name(p): len(p.read_text().splitlines()) for p in [*PACKAGE.rglob("*.py"), ROOT / "cli.py"]
    }
    assert not {name: lines for name, lines in sizes.items() if lines > LINE_LIMIT}


def test_no_import_cycle_between_modules():
    graph = module_graph()
    # A package's __init__ re-exporting its own modules is not a cycle between jobs.
    edges = {
        name: {m for m in targets if not (m.startswith(name + ".") or name.startswith(m + "."))}
        for name, targets in graph.items()
    }
    visiting, done, cycles = set(), set(), []

    def visit(node: str, trail: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(trail[trail.index(node) :])
            return
        visiting.add(node)
        for target in sorted(edges[node]):
            visit(target, [*trail, target])
        visiting.discard(node)
        done.add(node)

    for node in sorted(edges):
        visit(node, [node])
    assert not cycles


def test_the_library_never_imports_the_command_layer():
    graph = module_graph()
    upward = {
        name: targets
        for name, targets in graph.items()
        if not name.startswith("bitmoji_ml.commands")
        and any(t.startswith("bitmoji_ml.commands") for t in targets)
    }
    assert not upward
