"""Package structure: every e4d module imports on its own, and neither e4d/ nor nodes/ has an import cycle.

The graph is read statically with ``ast`` and counts every import statement, including the ones inside functions
(a deferred import still ties two modules together); imports under ``if TYPE_CHECKING:`` are left out.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def module_files(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``package`` (``__init__`` named as the package)."""
    out = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node outside ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (``from pkg import sub`` counts as importing ``pkg.sub`` only)."""
    files = module_files(package)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        is_pkg = f.name == "__init__.py"
        here = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in _imports(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = here[: len(here) - node.level + 1] if node.level else []
                src = ".".join(base + ([node.module] if node.module else []))
                # ``from pkg import sub`` imports the submodule; ``from mod import name`` imports mod
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in files else src for a in node.names]
            for t in targets:
                # the longest known module name that t starts with (``import e4d.fit.config`` -> e4d.fit.config)
                parts = t.split(".")
                for n in range(len(parts), 0, -1):
                    cand = ".".join(parts[:n])
                    if cand in files:
                        if cand != mod:
                            graph[mod].add(cand)
                        break
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (first == last), or [] when the graph is acyclic."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                cyc = visit(n)
                if cyc:
                    return cyc
        state[m] = 2
        path.pop()
        return []

    for m in sorted(graph):
        if m not in state:
            cyc = visit(m)
            if cyc:
                return cyc
    return []


def test_find_cycle_sees_a_cycle_and_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_import_graph_parses_relative_and_from_imports():
    g = import_graph("e4d")
    assert "e4d.interp.base" in g["e4d.interp.rife"]  # from .base import ...
    assert "e4d.rife.ifnet4" in g["e4d.interp.rife"]  # from ..rife.ifnet4 import ...
    assert "e4d.interp.rife" in g["e4d.interp"]  # package __init__


@pytest.mark.parametrize("package", ["e4d", "nodes"])
def test_no_import_cycle(package):
    cycle = find_cycle(import_graph(package))
    assert not cycle, (f"import cycle in {package}/: {' -> '.join(cycle)}; move the shared piece into a module "
                       "both sides import")


def test_rife_is_a_model_package_that_never_imports_the_interpolator_layer():
    g = import_graph("e4d")
    bad = {m: sorted(d) for m, d in g.items() if m.startswith("e4d.rife") and any(x.startswith("e4d.interp") for x in d)}
    assert not bad, f"e4d.rife must not import e4d.interp: {bad}"


def test_svd_is_only_imported_by_its_users():
    """SyncDreamer, guidance and the shared modules do not depend on the SVD model package."""
    g = import_graph("e4d")
    users = {m for m, deps in g.items() if any(d == "e4d.svd" or d.startswith("e4d.svd.") for d in deps)}
    allowed = {m for m in users if m.startswith(("e4d.svd", "e4d.pipeline", "e4d.model_folder", "e4d.cli",
                                                 "e4d.demo"))}
    assert users == allowed, f"unexpected importers of e4d.svd: {sorted(users - allowed)}"


def test_every_e4d_module_imports_alone():
    """Each module imports in an interpreter where no other e4d module was imported before it (one subprocess
    that clears e4d from sys.modules between imports, so torch is loaded once)."""
    mods = [m for m in module_files("e4d") if m != "e4d.__main__"]  # __main__ runs the CLI
    script = (
        "import importlib, json, sys, traceback\n"
        "bad = {}\n"
        f"for m in {mods!r}:\n"
        "    for k in [k for k in sys.modules if k == 'e4d' or k.startswith('e4d.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception:\n"
        "        bad[m] = traceback.format_exc(limit=3)\n"
        "print(json.dumps(bad))\n")
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    bad = json.loads(res.stdout.strip().splitlines()[-1])
    assert not bad, "modules that fail to import alone:\n" + "\n".join(f"{m}:\n{tb}" for m, tb in bad.items())
