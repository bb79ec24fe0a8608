"""The import graph of edge_agent and its drivers, read with ast: no module is imported to read it.

Used by tests/test_house.py (no circle, imports point down) and run on its own to print the
house's figures (modules per folder, the longest files, circles)::

    .venv/bin/python tests/support/imports.py
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"edge_agent": ROOT / "edge_agent", "edge_agent.drivers": ROOT / "drivers"}

__all__ = ["modules", "imports", "graph", "circles", "figures", "ROOT"]


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    found: dict[str, Path] = {}
    for base, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(folder).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            found[".".join((base, *rel))] = path
    return found


def _target(mod: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    parts = mod.split(".") if is_package else mod.split(".")[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def imports(mod: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``mod`` imports, at the top or inside a function alike."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _target(mod, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m in known and m != mod}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {mod: imports(mod, path, known) for mod, path in found.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def figures() -> str:
    found = modules()
    per_folder = Counter(str(p.parent.relative_to(ROOT)) for p in found.values())
    lengths = sorted(((sum(1 for _ in p.open(encoding="utf-8")), str(p.relative_to(ROOT)))
                      for p in found.values()), reverse=True)
    lines = [f"modules: {len(found)}"]
    lines += [f"  {folder}/: {n}" for folder, n in sorted(per_folder.items())]
    lines.append("longest files: " + ", ".join(f"{name} {n}" for n, name in lengths[:5]))
    found_circles = circles(graph())
    lines.append(f"import circles: {len(found_circles)}")
    lines += ["  " + " <-> ".join(c) for c in found_circles]
    return "\n".join(lines)


if __name__ == "__main__":
    print(figures())
