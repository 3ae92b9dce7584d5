"""The package's import graph: no cycles between modules, and no ``_private`` name imported across modules."""

from __future__ import annotations

import ast
from pathlib import Path

import beatrec

PKG = Path(beatrec.__file__).resolve().parent


def module_files() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """module -> the package modules it imports (anywhere in the file, lazy imports included), and the
    (importing module, "module.name") pairs that import a ``_private`` name from another module."""
    mods = module_files()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                for a in node.names:
                    full = f"{src}.{a.name}"
                    target = full if full in mods else src
                    if target in mods and target != m:
                        edges[m].add(target)
                    if src in mods and a.name.startswith("_") and not a.name.startswith("__") and full not in mods:
                        private.append((m, full))
            elif isinstance(node, ast.Import):
                edges[m].update(a.name for a in node.names if a.name in mods and a.name != m)
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_and_private_check_on_hand_made_graphs() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_package_has_no_import_cycles() -> None:
    edges, _ = import_graph()
    assert len(edges) > 50 and edges["beatrec.cli"], "the parser found too few modules or imports"
    assert cycles(edges) == []


def test_no_private_names_imported_across_modules() -> None:
    _, private = import_graph()
    assert private == []
