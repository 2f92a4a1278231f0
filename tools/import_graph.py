"""Which fastpush module imports which, read from the source (nothing is imported or run).

    python -m tools.import_graph            # one line per module: what it imports
    python -m tools.import_graph --cycles   # the import cycles, if any (exit code 1 when there are)

Every import counts: at the top of a module, inside a function, or under `if TYPE_CHECKING:`,
so a cycle cannot hide behind any of them. The compiled module's imports are read from its
`.pyx` (`import` and `from ... import` lines, including `cimport`).
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

__all__ = ["import_graph", "cycles"]

PACKAGE = "fastpush"
_PYX_IMPORT = re.compile(r"^\s*from\s+(\.+[\w.]*|fastpush[\w.]*)\s+c?import\s+([\w, ]+)", re.M)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(current: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import made in module `current`."""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _imports(root: Path, path: Path, modules: set[str]) -> set[str]:
    name = _module_name(root, path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(candidate: str, names: list[str]) -> None:
        # `from . import ops` imports the module `ops`; `from .hub import Hub` imports `hub`.
        submodules = {f"{candidate}.{imported}" for imported in names} & modules
        found.update(submodules)
        if not submodules and candidate in modules:
            found.add(candidate)

    if path.suffix == ".pyx":
        for source, names in _PYX_IMPORT.findall(path.read_text()):
            level = len(source) - len(source.lstrip("."))
            target = source.lstrip(".") or None
            absolute = _resolve(name, is_package, level, target) if level else source
            add(absolute, [n.strip() for n in names.split(",")])
        return found - {name}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            absolute = _resolve(name, is_package, node.level, node.module) if node.level else (node.module or "")
            add(absolute, [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.add(alias.name)
    return found - {name}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (names relative to the package)."""
    files = [p for p in (root / PACKAGE).rglob("*") if p.suffix in (".py", ".pyx")]
    modules = {_module_name(root, p) for p in files}
    graph = {_module_name(root, p): _imports(root, p, modules) for p in files}
    # Packages whose __init__ imports nothing (a docstring) are left out: nothing to show.
    return {m: targets for m, targets in graph.items() if targets or not _is_package(root, m)}


def _is_package(root: Path, module: str) -> bool:
    return root.joinpath(*module.split("."), "__init__.py").exists()


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _short(module: str) -> str:
    return module.removeprefix(PACKAGE + ".") or PACKAGE


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.import_graph", description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", action="store_true", help="print only the import cycles")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    graph = import_graph(args.root)
    if args.cycles:
        found = cycles(graph)
        for group in found:
            print(" <-> ".join(_short(m) for m in group))
        return 1 if found else 0
    print("\n".join(graph_lines(graph)))
    return 0


def graph_lines(graph: dict[str, set[str]]) -> list[str]:
    """The graph as docs/architecture.md lists it: one line per module, its imports sorted."""
    lines = []
    for module in sorted(graph, key=_short):
        targets = ", ".join(f"`{_short(t)}`" for t in sorted(graph[module], key=_short)) or "(nothing inside fastpush)"
        lines.append(f"- `{_short(module)}` -> {targets}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
