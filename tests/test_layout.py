"""The package's layout as ARCHITECTURE.md states it: sub-packages by job, imports that point
down the layers only, no import circle, no oversized module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ferjax"
# Bottom to top: a module may import from its own layer and the layers below it.
LAYERS = ("runtime", "data", "models", "evaluation", "training", "deploy", "config", "cli")
TOP_FILES = {"__init__.py", "__main__.py", "main.py"}
MAX_LINES = 500


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path) -> set[str]:
    """ferjax modules imported anywhere in the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ferjax"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ferjax"))
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {i for i in imports(p) if i in mods and i != m} for m, p in mods.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_top_level_is_a_few_sub_packages():
    entries = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    assert entries == set(LAYERS) | TOP_FILES, sorted(entries)


def test_imports_point_down_the_layers():
    upward = []
    for module, targets in graph().items():
        here = layer(module)
        for target in targets:
            there = layer(target)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_no_import_circle():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for nxt in g[node]:
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in g:
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own sub-modules is not a circle of modules
    real = [c for c in cycles if not any(a.startswith(b + ".") for a, b in zip(c[1:], c))]
    assert not real, real


def test_modules_stay_readable():
    long = {
        m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_the_graph_is_what_it_claims():
    """The premise of the tests above: the walk finds the package's real imports."""
    g = graph()
    assert "ferjax.training.step" in g["ferjax.training.program"]
    assert "ferjax.runtime.errors" in g["ferjax.data.sources.fer2013"]
    assert len(g) > 60
