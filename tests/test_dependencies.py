"""Every package that src/ and tests/ import is declared in pyproject.toml: src/ in [project] dependencies (or
the extra of its own subpackage: ui/ -> [ui]), tests/ in those or the [test] extra that the README's test
command installs. An import inside ``try: ... except ImportError`` is optional (used only when the user has
it) and need not be declared. The failure names the missing package and the file that imports it."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCAL = ({"facediff", "tests", "conftest", "tiny_sd"} | {p.stem for p in (ROOT / "tests").glob("*.py")}
         | {p.stem for p in (ROOT / "scripts").glob("*.py")})  # the repo's own modules


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.split(r"[\s<>=!~\[;]", req.strip(), maxsplit=1)[0])


def declared(extras: tuple[str, ...] = ()) -> set[str]:
    names = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for extra in extras:
        names |= {_requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]}
    return names


def _optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside a try whose handlers catch ImportError / ModuleNotFoundError (or Exception)?"""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            for h in node.handlers:
                names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception")
                       for n in names):
                    return True
    return False


def imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports of a file that are not optional."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module]
        else:
            continue
        if not _optional(node, parents):
            found |= {m.split(".")[0] for m in mods}
    return found


def undeclared(files: list[Path], allowed: set[str]) -> list[str]:
    dists = packages_distributions()
    missing = []
    for path in files:
        for mod in sorted(imports(path)):
            if mod in sys.stdlib_module_names or mod in LOCAL or mod == "__future__":
                continue
            candidates = {_norm(d) for d in dists.get(mod, [mod])}
            if not candidates & allowed:
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                missing.append(f"{where} imports {mod!r} (package {', '.join(sorted(candidates))}),"
                               " which pyproject.toml does not declare")
    return missing


def test_src_imports_are_declared():
    src = sorted((ROOT / "src" / "facediff").rglob("*.py"))
    core = [p for p in src if "ui" not in p.relative_to(ROOT / "src" / "facediff").parts[:1]]
    ui = [p for p in src if p not in core]
    problems = undeclared(core, declared()) + undeclared(ui, declared(("ui",)))
    assert not problems, "\n".join(problems)


def test_test_imports_are_declared_in_the_test_extra():
    problems = undeclared(sorted((ROOT / "tests").rglob("*.py")), declared(("test", "ui")))
    assert not problems, "\n".join(problems)


def test_the_checker_finds_a_missing_package(tmp_path):
    bad = tmp_path / "t.py"
    bad.write_text("import numpy\nimport hypothesis\ntry:\n    import lpips\nexcept ImportError:\n    lpips = None\n")
    problems = undeclared([bad], {"numpy"})
    assert len(problems) == 1 and "'hypothesis'" in problems[0], problems  # lpips is optional, numpy declared
