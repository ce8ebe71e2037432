"""The import graph of ``src/unipet`` follows the layers of DESIGN.md: imports point down or sideways within a
layer, never up, and no two modules import each other through any chain (imports inside functions included)."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "unipet"

#: DESIGN.md's layers (0 = bottom); a module belongs to the longest prefix listed
LAYERS: dict[str, int] = {
    "unipet.errors": 0, "unipet.fileio": 0, "unipet.device": 0, "unipet.version": 0, "unipet.resources": 0,
    "unipet.study": 1, "unipet.tasks": 1, "unipet.components": 1,
    "unipet.io": 2,
    "unipet.data": 3, "unipet.models": 3, "unipet.checkpoint": 3,
    "unipet.evaluate": 4, "unipet.quantify": 4,
    "unipet.infer": 5, "unipet.analysis": 5, "unipet.report": 5,
    "unipet.train": 6, "unipet.pretrain": 6,
    "unipet.demo": 7, "unipet.api": 7, "unipet.serve": 7, "unipet": 7,  # the package root re-exports the API
    "unipet.cli": 8, "unipet.__main__": 8,
}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    if not prefixes:
        raise AssertionError(f"{module} is in no layer of DESIGN.md; add it to LAYERS")
    return LAYERS[max(prefixes, key=len)]


def import_graph(root: Path = ROOT) -> tuple[set[str], dict[str, set[tuple[str, int]]]]:
    """``(modules, edges)``: every module of the package and, per module, the ``(module, line)`` of each unipet
    module it imports anywhere in its body (``import a.b``, ``from a import b`` where ``a.b`` is a module,
    ``from . import b``, ``from .a import x``), resolved to the deepest existing module."""
    files = {module_name(p, root.parent): p for p in root.rglob("*.py")}
    edges: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for module, path in files.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in files else source for a in node.names]
            for target in targets:
                if target != "unipet" and not target.startswith("unipet."):
                    continue
                while target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != module:
                    edges[module].add((target, node.lineno))
    return set(files), edges


def cycles(modules: set[str], edges: dict[str, set[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(modules):
        if start in index:
            continue
        work = [(start, iter(sorted(t for t, _ in edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(t for t, _ in edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_module_has_a_layer():
    modules, _ = import_graph()
    for module in modules:
        layer_of(module)


def test_no_import_points_up_a_layer():
    modules, edges = import_graph()
    upward = [f"{m} (layer {layer_of(m)}) line {line} imports {t} (layer {layer_of(t)})"
              for m in sorted(edges) for t, line in sorted(edges[m]) if layer_of(t) > layer_of(m)]
    assert not upward, "imports up the layers of DESIGN.md:\n" + "\n".join(upward)


def test_no_import_cycle():
    modules, edges = import_graph()
    found = cycles(modules, edges)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize("source, bad", [
    ("from unipet.train.losses import x\n", "upward"),
    ("def f():\n    from ..train import losses\n", "upward"),
    ("from . import b\n", "cycle"),
])
def test_the_checker_finds_upward_imports_and_cycles(tmp_path, source, bad):
    """The walk sees imports inside functions and relative imports (a checker that finds nothing proves nothing)."""
    pkg = tmp_path / "unipet"
    for folder in (pkg, pkg / "models", pkg / "train"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
    (pkg / "train" / "losses.py").write_text("")
    (pkg / "models" / "a.py").write_text(source)
    (pkg / "models" / "b.py").write_text("from unipet.models import a\n")
    modules, edges = import_graph(pkg)
    upward = [(m, t) for m in edges for t, _ in edges[m] if layer_of(t) > layer_of(m)]
    if bad == "upward":
        assert ("unipet.models.a", "unipet.train.losses") in upward or \
               ("unipet.models.a", "unipet.train") in upward
    else:
        assert cycles(modules, edges) == [["unipet.models.a", "unipet.models.b"]]
