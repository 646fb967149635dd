"""The architecture's counts (issue 21): import cycles, long files and process-kind branches.

    python tools/architecture.py          # prints the three counts and what makes them up

* **Import cycles**: the modules of ``ddpmkit`` and the imports between them, function-local
  imports included (imports under ``if TYPE_CHECKING:`` are left out: they never run). An import
  of a package's name is an edge to the package's ``__init__``, whose own imports are edges to its
  submodules. Every strongly connected component of more than one module is one cycle; the same
  count over folders (``ddpmkit.core``, ``ddpmkit.io``, ...) checks docs/ARCHITECTURE.md's table.
* **Long files**: the package's ``.py`` files over :data:`MAX_LINES` lines.
* **Process-kind branches** outside ``ddpmkit/core/``: ``isinstance`` tests on a process class
  and reads of the old ``.continuous`` flag (the regular expression :data:`BRANCH`).
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ddpmkit"
MAX_LINES = 400
BRANCH = re.compile(r"isinstance\([^)]*(GaussianDiffusion|ContinuousProcess|Process|EDM|VP|VE|SubVP|RectifiedFlow"
                    r"|Consistency)\b|\.continuous\b")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        base_parts = name.split(".") if is_pkg else name.split(".")[:-1]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    parent = base_parts[: len(base_parts) - (node.level - 1)]
                    mod = ".".join(parent + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = []
                for alias in node.names:
                    sub = f"{mod}.{alias.name}"
                    targets.append(sub if sub in files else mod)
            for target in targets:
                while target and target not in files:   # `import a.b.c` of a non-module: its package
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same imports between the package's folders (``ddpmkit.X``): docs/ARCHITECTURE.md's table."""
    def folder(module: str) -> str:
        return ".".join(module.split(".")[:2])
    out: dict[str, set[str]] = {folder(m): set() for m in graph}
    for module, targets in graph.items():
        out[folder(module)] |= {folder(t) for t in targets if folder(t) != folder(module)}
    return out


def long_files() -> list[tuple[str, int]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            found.append((str(path.relative_to(ROOT)), n))
    return found


def process_branches() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[1] == "core":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCH.search(line):
                found.append(f"{rel}:{i}: {line.strip()}")
    return found


def main() -> int:
    found_cycles = cycles(import_graph())
    print(f"import cycles: {len(found_cycles)}")
    for c in found_cycles:
        print("   ", " <-> ".join(c))
    folder_cycles = cycles(folder_graph(import_graph()))
    print(f"import cycles between folders: {len(folder_cycles)}")
    for c in folder_cycles:
        print("   ", " <-> ".join(c))
    files = long_files()
    print(f"files over {MAX_LINES} lines: {len(files)}")
    for name, n in files:
        print(f"    {name}: {n}")
    branches = process_branches()
    print(f"process-kind branches outside ddpmkit/core/: {len(branches)}")
    for b in branches:
        print("   ", b)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
