"""Import-order (layering) and import-cycle checks over every module of src/facediff.

Each module belongs to the layer named by its first package component under ``facediff`` (modules directly under
``facediff/`` are their own layer: ``facediff.errors`` is layer ``errors``). A module may import from its own layer
or lower ones; names on one line of ``LAYERS`` are peers and may not import each other. Every import counts:
module-level, inside functions, under ``if TYPE_CHECKING``, relative, and ``importlib.import_module("facediff.x")``
with a constant name. A new subpackage must be added to ``LAYERS``.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "facediff"
ROOT = "facediff"

# lowest first; names in one group are peers (may not import each other)
LAYERS: list[tuple[str, ...]] = [
    ("errors", "imaging", "progress"),
    ("fsutil",),  # folder swaps (one-line errors from facediff.errors)
    ("registry",),
    ("config_rules",),  # the config's coercion and validation rules (ConfigError)
    ("config",),
    ("data",),
    ("models", "diffusion"),
    ("conditioning",),
    ("sampling",),
    ("pipelines",),
    ("metrics",),
    ("training",),
    ("report",),
    ("evaluation",),
    ("experiments",),
    ("request",),  # the typed generation request (CLI, API and UI share it)
    ("generate",),  # runs a request and saves PNGs that carry it
    ("api",),
    ("ui",),  # the gradio app (calls api only)
    ("cli",),  # above ui, so that `facediff ui` can start it
]
RANK: dict[str, int] = {name: i for i, group in enumerate(LAYERS) for name in group}
RANK[ROOT] = -1  # facediff/__init__.py sits below everything: anyone may read facediff.__version__


# ------------------------------------------------------------------------------------------- the checker
def module_name(path: Path, src: Path = SRC) -> str:
    """facediff/a/b.py -> facediff.a.b; facediff/a/__init__.py -> facediff.a."""
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package: name -> file."""
    return {module_name(p, src): p for p in sorted(src.rglob("*.py"))}


def _resolve_from(mod: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute module named by ``from <.. level><target> import ...`` written in module ``mod``."""
    if level == 0:
        return target or ""
    package = mod.split(".") if is_package else mod.split(".")[:-1]
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join(base + ([target] if target else []))


def imports_of(mod: str, source: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """(imported facediff module, line) for every import in ``source``, wherever it is in the file."""
    found: list[tuple[str, int]] = []

    def add(name: str, line: int) -> None:
        if name == ROOT or name.startswith(ROOT + "."):
            found.append((name, line))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(mod, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # `from facediff import api` imports the module facediff.api; `from facediff.config import X` a name
                add(sub if sub in known else base, node.lineno)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            fname = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if fname in ("import_module", "__import__"):
                add(node.args[0].value, node.lineno)
    return found


def import_edges(src: Path = SRC) -> list[tuple[str, str, str]]:
    """(importer, imported, "file:line") for every facediff import in the package."""
    mods = discover(src)
    known = set(mods)
    edges = []
    for mod, path in mods.items():
        rel = path.relative_to(src.parent.parent) if src.parent.parent in path.parents else path
        try:
            text = path.read_text()
        except FileNotFoundError:  # deleted since discover() listed it
            continue
        try:
            found = imports_of(mod, text, path.name == "__init__.py", known)
        except SyntaxError as e:
            raise AssertionError(f"{rel}: cannot parse ({e})") from None
        for target, line in found:
            edges.append((mod, target, f"{rel}:{line}"))
    return edges


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def unknown_layers(modules) -> list[str]:
    return sorted({f"{m}: package {layer_of(m)!r} is not in the declared layer order; add it to LAYERS in "
                   f"tests/test_layers.py (and to docs) at the level it belongs"
                   for m in modules if layer_of(m) not in RANK})


def layer_violations(edges) -> list[str]:
    """One line per imported module that goes up the layer order or sideways between peers (with where)."""
    bad: dict[str, list[str]] = {}
    for edge in edges:
        a, b = edge[0], edge[1]
        la, lb = layer_of(a), layer_of(b)
        if la == lb or la not in RANK or lb not in RANK:  # own layer; unknown ones are reported separately
            continue
        if RANK[lb] > RANK[la]:
            line = f"{a} -> {b} (layer {lb} above {la})"
        elif RANK[lb] == RANK[la]:
            line = f"{a} -> {b} (layers {la} and {lb} are peers and may not import each other)"
        else:
            continue
        bad.setdefault(line, [])
        if len(edge) > 2:
            bad[line].append(edge[2])
    return [f"{line}  [{', '.join(dict.fromkeys(where))}]" if where else line for line, where in sorted(bad.items())]


def strongly_connected(edges) -> list[list[str]]:
    """Tarjan's SCCs of the graph of ``edges`` ((src, dst, ...) tuples) with more than one node or a self-loop."""
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        graph[edge[0]].add(edge[1])
        graph.setdefault(edge[1], set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _a_cycle(comp: list[str], edges) -> list[str]:
    """One concrete cycle through comp[0] inside the component (BFS back to the start)."""
    members = set(comp)
    graph: dict[str, list[str]] = defaultdict(list)
    for edge in edges:
        if edge[0] in members and edge[1] in members:
            graph[edge[0]].append(edge[1])
    start = comp[0]
    if start in graph[start]:
        return [start, start]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(set(graph[v])):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp  # unreachable for a real SCC


def cycles(edges) -> list[str]:
    """One line per import cycle: the modules involved and one concrete cycle among them."""
    return [f"{' -> '.join(_a_cycle(comp, edges))}   (cycle among: {', '.join(comp)})"
            for comp in strongly_connected(edges)]


# ------------------------------------------------------------------------------------------- the real tree
def test_every_package_is_in_the_declared_layer_order():
    modules = discover()
    assert len(modules) > 20, SRC
    problems = unknown_layers(set(modules) | {e[1] for e in import_edges()})
    assert not problems, "modules outside the declared layer order:\n" + "\n".join(problems)


def test_imports_follow_the_layer_order():
    bad = layer_violations(import_edges())
    order = " < ".join(" | ".join(g) for g in LAYERS)
    assert not bad, f"{len(bad)} import(s) break the layer order {order}:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(import_edges())
    assert not found, f"{len(found)} import cycle(s) (module- and function-level imports):\n" + "\n".join(found)


def missing_modules(edges, known: set[str]) -> list[str]:
    """One line per import of a facediff module that does not exist (a deleted or renamed module)."""
    bad: dict[str, list[str]] = {}
    for edge in edges:
        if edge[1] not in known:
            bad.setdefault(f"{edge[0]} -> {edge[1]} (no such module)", []).append(edge[2] if len(edge) > 2 else "")
    return [f"{line}  [{', '.join(dict.fromkeys(w for w in where if w))}]" for line, where in sorted(bad.items())]


def test_every_imported_module_exists():
    bad = missing_modules(import_edges(), set(discover()))
    assert not bad, f"{len(bad)} import(s) of modules that do not exist:\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------------- the checker, checked
def test_checker_flags_upward_and_peer_edges_only():
    edges = [
        ("facediff.data.synth", "facediff.training.loop"),  # up
        ("facediff.models.unet", "facediff.diffusion.process"),  # peers
        ("facediff.ui.app", "facediff.cli.main"),  # up: the UI must not use the CLI
        ("facediff.config", "facediff.api"),  # up
        ("facediff.errors", "facediff.imaging"),  # peers in the lowest layer
        ("facediff", "facediff.errors"),  # the root package imports up
        ("facediff.training.loop", "facediff.data.synth"),  # down: fine
        ("facediff.training.loop", "facediff.training.data"),  # own layer: fine
        ("facediff.api", "facediff.config"),  # down: fine
        ("facediff.cli.main", "facediff"),  # the root is below everything: fine
    ]
    bad = layer_violations(edges)
    assert bad == sorted([
        "facediff -> facediff.errors (layer errors above facediff)",
        "facediff.ui.app -> facediff.cli.main (layer cli above ui)",
        "facediff.config -> facediff.api (layer api above config)",
        "facediff.data.synth -> facediff.training.loop (layer training above data)",
        "facediff.errors -> facediff.imaging (layers errors and imaging are peers and may not import each other)",
        "facediff.models.unet -> facediff.diffusion.process "
        "(layers models and diffusion are peers and may not import each other)",
    ])


def test_checker_flags_missing_modules():
    known = {"facediff", "facediff.config", "facediff.models", "facediff.models.unet"}
    bad = missing_modules([("facediff.models.unet", "facediff.config", "a.py:1"),
                           ("facediff.models.unet", "facediff.models.bundle", "a.py:2")], known)
    assert bad == ["facediff.models.unet -> facediff.models.bundle (no such module)  [a.py:2]"]


def test_checker_flags_unknown_packages():
    problems = unknown_layers(["facediff.data.synth", "facediff.gizmo.core", "facediff.gizmo"])
    assert len(problems) == 2 and all("'gizmo' is not in the declared layer order" in p for p in problems)
    assert all("add it to LAYERS" in p for p in problems)


def test_checker_finds_cycles_and_self_imports():
    edges = [("facediff.a", "facediff.b"), ("facediff.b", "facediff.c"), ("facediff.c", "facediff.a"),
             ("facediff.c", "facediff.d"), ("facediff.e", "facediff.e"), ("facediff.f", "facediff.g")]
    assert strongly_connected(edges) == [["facediff.a", "facediff.b", "facediff.c"], ["facediff.e"]]
    found = cycles(edges)
    assert found[0].startswith("facediff.a -> facediff.b -> facediff.c -> facediff.a")
    assert found[1].startswith("facediff.e -> facediff.e")
    assert cycles([("facediff.a", "facediff.b"), ("facediff.b", "facediff.c")]) == []
    assert cycles([("x", "y"), ("y", "x")])[0].startswith("x -> y -> x")


def test_parser_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "facediff"
    (pkg / "data").mkdir(parents=True)
    (pkg / "training").mkdir()
    for f in ["__init__.py", "api.py", "config.py", "data/__init__.py", "data/synth.py", "training/__init__.py"]:
        (pkg / f).write_text("")
    (pkg / "training" / "loop.py").write_text(
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "import facediff.config\n"
        "from facediff import api\n"
        "from facediff.data.synth import render\n"
        "from . import data\n"
        "from .. import config as c\n"
        "from ..data import synth\n"
        "from .data import helper\n"
        "if TYPE_CHECKING:\n"
        "    from facediff.errors import FacediffError\n"
        "def f():\n"
        "    from facediff.experiments.registry import run_experiment\n"
        "    import importlib\n"
        "    return importlib.import_module('facediff.ui')\n"
        "class K:\n"
        "    def m(self):\n"
        "        import facediff.report.html as h\n"
    )
    (pkg / "training" / "data.py").write_text("")
    edges = {(a, b) for a, b, _ in import_edges(pkg)}
    got = {b for a, b in edges if a == "facediff.training.loop"}
    # `from .data import helper`: helper is a name in module facediff.training.data, not a module
    assert got == {"facediff.config", "facediff.api", "facediff.data.synth", "facediff.training.data",
                   "facediff.errors", "facediff.experiments.registry", "facediff.ui", "facediff.report.html"}
    bad = layer_violations(import_edges(pkg))
    assert any(b.startswith("facediff.training.loop -> facediff.api (layer api above training)") for b in bad)
    assert any(b.startswith("facediff.training.loop -> facediff.experiments.registry (layer experiments")
               for b in bad)
    assert any(b.startswith("facediff.training.loop -> facediff.ui (layer ui above training)") for b in bad)
    assert not any("-> facediff.config " in b or "-> facediff.errors " in b for b in bad)


def test_parser_resolves_relative_imports_in_packages(tmp_path):
    pkg = tmp_path / "facediff"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("from .synth import render\nfrom . import inspect\n")
    (pkg / "data" / "synth.py").write_text("from . import render_helper\nfrom facediff.data import inspect\n")
    (pkg / "data" / "inspect.py").write_text("")
    edges = [(a, b) for a, b, _ in import_edges(pkg)]
    assert ("facediff.data", "facediff.data.synth") in edges and ("facediff.data", "facediff.data.inspect") in edges
    assert ("facediff.data.synth", "facediff.data") in edges  # `from . import x` (x not a module) -> the package
    assert ("facediff.data.synth", "facediff.data.inspect") in edges
    assert cycles(edges)[0].startswith("facediff.data -> facediff.data.synth -> facediff.data")
