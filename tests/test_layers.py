"""The package's layers (DESIGN §2): imports run one way, with no cycle at package or file level.

Every module's imports are read with ``ast`` (so function-level lazy imports and ``TYPE_CHECKING``
imports count as much as top-level ones) and resolved to watcher modules. Three checks:

- no import cycle between files;
- no import cycle between top-level units (a package such as ``watcher.engine`` or a module such
  as ``watcher.config``), and no import that goes up ``LAYERS`` (a unit imports only units of a
  lower layer; units of one layer do not import each other);
- nothing but ``watcher/cli/`` imports ``argparse`` (one module per command family there).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import watcher

ROOT = Path(watcher.__file__).resolve().parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("watcher", "errors", "core", "regex", "redact"),  # `watcher` is the package's __init__
    ("links", "logs", "sdnotify", "signing", "heap"),
    ("rules",),  # the rule format: nothing of engine, sources or detectors
    ("config",),
    ("selfmetrics",),
    ("store",),
    ("instrument", "sources", "detectors"),  # instrument: hooks only, nothing of the daemon
    ("notify",),
    ("engine",),
    ("cluster",),
    ("web", "backtest"),
    ("daemon",),
    ("evals",),
    ("bench",),
    ("cli",),
    ("__main__",),
)
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def module_name(path: Path) -> str:
    """Return the dotted name of the module at ``path`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Yield every watcher module ``name`` imports (anywhere in the file) and the line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                up = package[: len(package) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            # `from pkg import sub` imports the module pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            while target and target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != name:
                yield target, node.lineno


EDGES: dict[str, dict[str, int]] = {
    name: {t: line for t, line in imported(name, path)} for name, path in MODULES.items()
}


def unit(module: str) -> str:
    """Return the top-level unit of ``module``: ``watcher.engine.group`` → ``engine``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def test_every_unit_has_a_layer() -> None:
    units = {unit(m) for m in MODULES}
    assert units <= set(RANK), f"add to LAYERS: {sorted(units - set(RANK))}"


def test_no_file_level_import_cycle() -> None:
    graph = {m: set(ts) for m, ts in EDGES.items()}
    assert cycles(graph) == []


def test_no_package_level_import_cycle() -> None:
    graph: dict[str, set[str]] = {unit(m): set() for m in MODULES}
    for m, ts in EDGES.items():
        graph[unit(m)] |= {unit(t) for t in ts if unit(t) != unit(m)}
    assert cycles(graph) == []


def test_imports_go_down_the_layers_only() -> None:
    upward = [
        f"{MODULES[m].relative_to(ROOT.parent)}:{line}: {unit(m)} (layer {RANK[unit(m)]}) imports "
        f"{t} (layer {RANK[unit(t)]})"
        for m, ts in EDGES.items()
        for t, line in ts.items()
        if unit(t) != unit(m) and RANK[unit(t)] >= RANK[unit(m)]
    ]
    assert upward == []


def test_only_the_cli_imports_argparse() -> None:
    offenders = []
    for name, path in MODULES.items():
        if name == "watcher.cli" or name.startswith("watcher.cli."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(n == "argparse" or n.startswith("argparse.") for n in names):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # A planted upward import, a planted cycle: the checks can fail.
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_cycle_finder(source: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(source) == expected


def test_lazy_imports_count() -> None:
    """A function-level import is found like a top-level one (the resolver reads the whole tree)."""
    found = dict(EDGES["watcher.cli"])
    assert "watcher.daemon" in found  # imported inside `_cmd_run` only
