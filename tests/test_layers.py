"""The import graph as the code draws it: no cycle among the project's modules, no arrow up the layers.

The graph is read with ``ast`` from the source (no module is imported):
one edge per ``import`` statement, in three kinds: at module level (what
runs on import), under ``if TYPE_CHECKING:`` (annotations only), and
inside a function (runs when called).

Three graphs are checked, each acyclic:

* module level: what Python loads, in order, at import;
* plus the ``TYPE_CHECKING`` imports, except ``TYPE_ONLY_BACK_EDGES``: an
  annotation that names a module above, kept for the type checker and
  listed here with its reason;
* plus every import inside a function: one that closes a cycle is the
  dodge this rules out (it only moves the cycle to call time). The few
  imports inside functions the project keeps are lazy loading of optional
  parts (a CLI subcommand, plotly, pysyncobj) and say so where they stand.

``lint-imports`` (the contracts in setup.cfg) checks the layers on the same
code in CI; this test keeps the rule in the suite a developer runs.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "transport", "apps", "benchmarks")
LAYERS = ("benchmarks", "apps", "actors", "transport")
"""Top to bottom: a package may import those after it, never those before it."""

TYPE_ONLY_BACK_EDGES = {
    # Actor.actor_system is annotated with the full ActorSystem for the apps' type checking;
    # at run time an actor needs only actors.actor.Host.
    ("actors.actor", "actors.system"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules one import statement loads (``from a import b`` loads ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [base] + [f"{base}.{alias.name}" for alias in node.names]
    found = set()
    for name in names:
        # the module itself, or the nearest project module above it (``import a.b.c`` loads a, a.b, a.b.c)
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            candidate = ".".join(parts[:i])
            if candidate in known:
                found.add(candidate)
                break
    return found


Edges = set[tuple[str, str]]


@functools.cache
def _graph() -> tuple[Edges, Edges, Edges]:
    """The project's (module-level, TYPE_CHECKING-only, inside-function) import edges, read once."""
    return _read(_modules())


def _read(modules: dict[str, Path]) -> tuple[Edges, Edges, Edges]:
    known = set(modules)
    runtime: set[tuple[str, str]] = set()
    typing_only: set[tuple[str, str]] = set()
    in_functions: set[tuple[str, str]] = set()

    def visit(body: list[ast.stmt], module: str, is_package: bool, type_only: bool) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                for target in _targets(stmt, module, is_package, known):
                    if target != module:
                        (typing_only if type_only else runtime).add((module, target))
            elif isinstance(stmt, ast.If):
                visit(stmt.body, module, is_package, type_only or _is_type_checking(stmt.test))
                visit(stmt.orelse, module, is_package, type_only)
            elif isinstance(stmt, ast.Try):
                for part in (stmt.body, stmt.orelse, stmt.finalbody, *(h.body for h in stmt.handlers)):
                    visit(part, module, is_package, type_only)

    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        visit(tree.body, module, is_package, False)
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for stmt in ast.walk(fn):
                    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                        in_functions |= {(module, t) for t in _targets(stmt, module, is_package, known) if t != module}
    return runtime, typing_only - runtime, in_functions


def _without_parent_edges(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Drop package -> own submodule edges: a package's ``__init__`` gathers its modules' names (its
    public face). A submodule that imports its own package's ``__init__`` stays: that is a real cycle."""
    return {(a, b) for a, b in edges if not b.startswith(a + ".")}


def _cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    """One cycle in the graph, as a path that returns to its start, or None."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = dfs(start)
            if found:
                return found
    return None


def test_the_graph_reader_sees_a_planted_cycle() -> None:
    """The checker itself can fail: a cycle through three modules is found, a DAG is not."""
    assert _cycle({("a", "b"), ("b", "c"), ("c", "a")}) == ["a", "b", "c", "a"]
    assert _cycle({("a", "b"), ("b", "c"), ("a", "c")}) is None
    runtime, _, _ = _graph()
    assert ("actors.system", "actors.wire") in runtime  # the reader finds real edges
    assert len(runtime) > 100


def test_no_import_cycle_among_project_modules_at_run_time() -> None:
    runtime, _, _ = _graph()
    cycle = _cycle(_without_parent_edges(runtime))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_type_checking_imports_form_no_cycle_beyond_the_listed_ones() -> None:
    runtime, typing_only, _ = _graph()
    assert TYPE_ONLY_BACK_EDGES <= typing_only, "a listed type-only edge is gone: drop it from the list"
    cycle = _cycle(_without_parent_edges(runtime | (typing_only - TYPE_ONLY_BACK_EDGES)))
    assert cycle is None, "import cycle (counting TYPE_CHECKING imports): " + " -> ".join(cycle or [])


def test_no_import_inside_a_function_closes_a_cycle() -> None:
    runtime, typing_only, in_functions = _graph()
    everything = runtime | (typing_only - TYPE_ONLY_BACK_EDGES) | in_functions
    cycle = _cycle(_without_parent_edges(everything))
    assert cycle is None, "import cycle through an import inside a function: " + " -> ".join(cycle or [])


def test_no_package_imports_a_layer_above_it() -> None:
    runtime, typing_only, in_functions = _graph()
    rank = {pkg: i for i, pkg in enumerate(LAYERS)}
    upward = sorted(
        (a, b) for a, b in runtime | typing_only | in_functions
        if rank[b.split(".")[0]] < rank[a.split(".")[0]]
    )
    assert upward == [], f"imports that run up the layers {' -> '.join(LAYERS)}: {upward}"
