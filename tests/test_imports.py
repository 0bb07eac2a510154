"""The import graph of ``metaprune`` and its CLI has no cycle, function-local imports included.

A cycle between two modules (a imports b, b imports a, at the top or inside a function) or between two
packages (a module of ``metaprune.pruning`` imports ``metaprune.features``, which imports a module of
``metaprune.pruning``) means neither floor stands without the other. The graph is read from the source
(``ast``), so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"metaprune": ROOT / "metaprune", "metaprune.cli": ROOT / "cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for name, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = path
    return out


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules ``module`` imports anywhere in its source (a name imported from a module counts
    as that module; a package's own ``__init__`` imported by its members does not count)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(head + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module and not module.startswith(name + "."):
            out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imported(m, p, known) for m, p in known.items()}


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` (its nodes in order, the first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def _package(module: str, known: dict[str, Path]) -> str:
    """A module's package: itself for a package or a top-level module, else its parent."""
    return module if known[module].name == "__init__.py" or module.count(".") < 2 else module.rpartition(".")[0]


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_a_function_local_import_is_an_edge(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from metaprune.pruning import method\n    return method\n")
    assert _imported("x", source, {"x": source, "metaprune.pruning.method": source}) == {"metaprune.pruning.method"}


def test_no_module_imports_itself_through_others():
    assert _cycle(_graph()) is None


def test_no_two_packages_import_each_other():
    known = _modules()
    edges: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        for target in targets:
            a, b = _package(module, known), _package(target, known)
            if a != b and not a.startswith(b + ".") and not b.startswith(a + "."):
                edges.setdefault(a, set()).add(b)
    assert _cycle(edges) is None
