"""Import layering, read from the source with `ast` (nothing is imported to draw the graph).

Rules, for every module under harness/, variants/ and examples/:

- no import cycles, neither among the imports that run at import time nor once the imports
  inside functions are counted too;
- a variant or an example plugin imports attnbench only as ``from attnbench import ...``, and a
  variant shares code with another only through a private ``variants/_*.py`` module;
- `attnbench` (the public API, harness/__init__.py), `attnbench.store` and `attnbench.report` and every module under
  them, and the two entry points loaded at start-up (the `attnbench` command, `attnbench.cli`,
  and the pytest plugin) do not reach torch through the imports that run at import time.

How an import becomes edges:

- ``import a.b.c`` is an edge to ``a.b.c``; so is ``from a.b import c`` where ``c`` is a
  submodule, while ``from a.b import name`` is an edge to ``a.b``. Relative imports are
  resolved against the importer's package.
- Python runs ``a`` and ``a.b`` before ``a.b.c``, so those are edges too, except to the
  packages that contain the importer: Python has started them before the importer runs, and
  importing a sibling through them does not run them again (an explicit
  ``from a.b import name`` inside ``a.b`` is still an edge: it reads a half-run package).
- *Where* an import runs: "top" for the module body, class bodies and ``if``/``try`` blocks
  at module level; "function" inside a ``def``; "type_checking" under ``if TYPE_CHECKING:``,
  which never runs and is left out of both graphs (but not out of the public-API rule).
- A string that is exactly the dotted name of a project module (``"attnbench.core.case"``) is
  taken as a lazy import of it, a "function" edge: that is how the lazy `harness/__init__` and
  `harness/report/__init__` name the modules they import on first attribute access.

A cycle through a function-level import is a real cycle too: each module needs the other, the
import inside the function only moves the failure to the first call and hides the dependency
from a reader. Function-level imports that stay are the lazy ones that keep torch, pandas,
matplotlib or rich out of start-up; none of them closes a cycle.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOTH_GRAPHS = ("top", "function")


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    kind: str  # "top", "function" or "type_checking"
    line: int
    implicit: bool = False  # a package that Python runs before the named module

    def where(self, modules: dict[str, Path]) -> str:
        path = modules[self.importer]
        try:
            path = path.relative_to(ROOT)
        except ValueError:
            pass
        return f"{path}:{self.line}"


def find_modules(folder: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of the package `package`, whose files are in `folder`
    (pyproject's package-dir installs harness/ as `attnbench` and variants/ as `attnbench.variants`)."""
    modules = {}
    for path in sorted(folder.rglob("*.py")):
        parts = [package, *path.relative_to(folder).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def project_modules() -> dict[str, Path]:
    modules = find_modules(ROOT / "harness", "attnbench") | find_modules(ROOT / "variants", "attnbench.variants")
    for example in sorted((ROOT / "examples").iterdir()):
        source_root = example / "src" if (example / "src").is_dir() else example
        for init in sorted(source_root.glob("*/__init__.py")):
            modules |= find_modules(init.parent, init.parent.name)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(body: list[ast.stmt], kind: str):
    """(statement, where it runs) for every statement, descending into nested blocks."""
    for node in body:
        yield node, kind
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _statements(node.body, "function")
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.body, "type_checking")
            yield from _statements(node.orelse, kind)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, None) or ():
                    if isinstance(child, ast.ExceptHandler | ast.match_case):
                        yield from _statements(child.body, kind)
                    elif isinstance(child, ast.stmt):
                        yield from _statements([child], kind)


def _resolve(importer: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _with_ancestors(importer: str, target: str, kind: str, line: int) -> list[Import]:
    parts = target.split(".")
    edges = [Import(importer, target, kind, line)]
    for depth in range(1, len(parts)):
        ancestor = ".".join(parts[:depth])
        if importer == ancestor or importer.startswith(ancestor + "."):
            continue  # a package that contains the importer has already started
        edges.append(Import(importer, ancestor, kind, line, implicit=True))
    return edges


def read_imports(modules: dict[str, Path]) -> list[Import]:
    """Every import of every module in `modules`, resolved to dotted names (see the docstring)."""
    edges: list[Import] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, kind in _statements(tree.body, "top"):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    edges += _with_ancestors(name, alias.name, kind, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.module, node.level)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    if submodule in modules:
                        edges += _with_ancestors(name, submodule, kind, node.lineno)
                    else:
                        edges += _with_ancestors(name, base, kind, node.lineno)
        for constant in ast.walk(tree):
            if isinstance(constant, ast.Constant) and isinstance(constant.value, str) \
                    and "." in constant.value and constant.value in modules:
                edges.append(Import(name, constant.value, "function", constant.lineno))
    return sorted(set(edges), key=lambda edge: (edge.importer, edge.line, edge.target))


def import_graph(edges: list[Import], kinds=("top",), within: str = "") -> dict[str, set[str]]:
    """importer -> targets, over the imports of `kinds` whose both ends start with `within`."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if edge.kind in kinds and edge.importer.startswith(within) and edge.target.startswith(within):
            graph.setdefault(edge.importer, set()).add(edge.target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle, as a path that ends where it starts, per strongly connected component.

    Works on any graph of names, so a test can hand it a synthetic one."""
    nodes = sorted(set(graph) | {target for targets in graph.values() for target in targets})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graphs here are a few hundred nodes deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in nodes:
        if node not in index:
            connect(node)

    cycles = []
    for component in components:
        start = min(component)
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:  # breadth-first inside the component, back to `start`
            node = queue.popleft()
            if start in graph.get(node, ()):
                path = [start]
                while node != start:
                    path.insert(1, node)
                    node = came_from[node]
                cycles.append(path + [start])
                break
            for target in sorted(graph.get(node, ()) & component):
                if target not in came_from and target != start:
                    came_from[target] = node
                    queue.append(target)
    return sorted(cycles)


def describe_cycle(cycle: list[str], edges: list[Import], modules: dict[str, Path], kinds) -> str:
    """`a -> b -> a`, then each step with the line that makes it."""
    steps = []
    for importer, target in zip(cycle, cycle[1:], strict=False):
        edge = next(e for e in edges if e.importer == importer and e.target == target and e.kind in kinds)
        how = f"{edge.kind}-level" + (", a package run before its submodule" if edge.implicit else "")
        steps.append(f"  {importer} -> {target}  ({edge.where(modules)}, {how})")
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


def cycle_report(modules: dict[str, Path], kinds) -> list[str]:
    edges = read_imports(modules)
    return [describe_cycle(cycle, edges, modules, kinds) for cycle in find_cycles(import_graph(edges, kinds))]


def private_harness_imports(modules: dict[str, Path]) -> list[str]:
    """Imports of the harness's subpackages (`attnbench.core`, ...) by variants and plugins."""
    return [
        f"{edge.where(modules)}: {edge.importer} imports {edge.target}; use `from attnbench import ...`"
        for edge in read_imports(modules)
        if _area(edge.importer) != "harness" and _area(edge.target) == "harness" and edge.target != "attnbench"
        and not edge.implicit
    ]


def _area(name: str) -> str:
    """'harness' (attnbench and its subpackages), 'variants' (attnbench.variants) or the plugin's package."""
    if name == "attnbench.variants" or name.startswith("attnbench.variants."):
        return "variants"
    return "harness" if name == "attnbench" or name.startswith("attnbench.") else name.split(".")[0]


def import_time_path(modules: dict[str, Path], start: str, forbidden: str) -> list[str] | None:
    """The chain of import-time imports from `start` to `forbidden` (or a submodule), if any."""
    graph = import_graph(read_imports(modules), kinds=("top",))
    parts = start.split(".")
    roots = [".".join(parts[:depth]) for depth in range(1, len(parts) + 1)]  # `import a.b` runs a
    came_from: dict[str, str | None] = dict.fromkeys(roots)
    queue = deque(roots)
    while queue:
        node = queue.popleft()
        if node == forbidden or node.startswith(forbidden + "."):
            path = [node]
            while came_from[path[0]] is not None:
                path.insert(0, came_from[path[0]])
            return path
        for target in sorted(graph.get(node, ())):
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    return None


MODULES = project_modules()
# the driver merges a cell's processes: pure data, no torch
TORCH_FREE = ["attnbench", "attnbench.cli", "attnbench.integrations.pytest_plugin", "attnbench.measure.merge"] + [
    name for name in MODULES if name.split(".")[:2] in (["attnbench", "store"], ["attnbench", "report"])]


def test_the_walker_sees_the_whole_project():
    assert {"attnbench", "attnbench.core.case", "attnbench.report.tables", "attnbench.variants.luong",
            "attnbench_sigmoid_attention.sigmoid"} <= set(MODULES)
    edges = {(e.importer, e.target, e.kind, e.implicit) for e in read_imports(MODULES)}
    assert ("attnbench", "attnbench.core.variant", "function", False) in edges  # the lazy name table
    assert ("attnbench.cli.main", "torch", "function", False) in edges
    assert ("attnbench.variants.sdpa", "attnbench", "top", False) in edges
    assert ("attnbench_sigmoid_attention", "attnbench_sigmoid_attention.sigmoid", "top", False) in edges
    # `from attnbench.plan.suite import ...` runs harness/plan/__init__ first
    assert ("attnbench.engine.sweep", "attnbench.plan", "top", True) in edges


def test_no_import_cycle_at_import_time():
    cycles = cycle_report(MODULES, ("top",))
    assert not cycles, "import cycles among module-level imports:\n" + "\n".join(cycles)


def test_no_import_cycle_counting_imports_inside_functions():
    cycles = cycle_report(MODULES, BOTH_GRAPHS)
    assert not cycles, "import cycles once imports inside functions count:\n" + "\n".join(cycles)


def test_variants_and_plugins_import_only_the_public_api():
    assert {"harness", "variants", "attnbench_sigmoid_attention"} <= {_area(name) for name in MODULES}
    offences = private_harness_imports(MODULES)
    assert not offences, "\n".join(offences)


def test_a_variant_shares_code_through_a_private_module_not_another_variant():
    offences = [f"{edge.where(MODULES)}: {edge.importer} imports the variant module {edge.target}"
                for edge in read_imports(MODULES)
                if _area(edge.importer) == "variants" and _area(edge.target) == "variants"
                and edge.target != "attnbench.variants" and not edge.target.split(".")[2].startswith("_")]
    assert not offences, "\n".join(offences) + "\nmove what they share into a variants/_<name>.py module"


@pytest.mark.parametrize("start", TORCH_FREE)
def test_no_torch_at_import_time(start):
    path = import_time_path(MODULES, start, "torch")
    assert path is None, f"`import {start}` reaches torch: " + " -> ".join(path)


@pytest.mark.parametrize("library", ["torch", "pandas", "numpy", "matplotlib", "rich"])
def test_the_command_line_starts_without_heavy_libraries(library):
    """Why the imports left inside cli functions are there: each command loads what it needs."""
    path = import_time_path(MODULES, "attnbench.cli", library)
    assert path is None, "`import attnbench.cli` reaches " + library + ": " + " -> ".join(path)


def test_no_torch_at_import_time_in_a_fresh_interpreter():
    """The real thing: importing all of them pulls no torch into `sys.modules`."""
    names = ", ".join(dict.fromkeys(["attnbench.store", "attnbench.report", *TORCH_FREE]))
    code = f"import {names}; import sys; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _write_package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    package = next(iter(files)).split("/")[0]
    return find_modules(root / package, package)


def test_find_cycles_on_a_synthetic_graph():
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"e"}, "f": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}}) == []


def test_a_planted_cycle_is_found(tmp_path):
    """Modules that import each other, at module level, inside a function and through a lazy
    name table, in a throw-away package that the same walker reads."""
    modules = _write_package(tmp_path, {
        "planted/__init__.py": "",
        "planted/a.py": "from planted import b\n",
        "planted/b.py": "import planted.a\n",
        "planted/c.py": "def late():\n    from . import d\n",
        "planted/d.py": "from planted.c import late\n",
        "planted/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from planted import a\n",
        "planted/f.py": '_LAZY = {"thing": "planted.g"}  # a lazy name table, as in harness/__init__\n',
        "planted/g.py": "from planted.f import _LAZY\n",
    })
    top = cycle_report(modules, ("top",))
    every = cycle_report(modules, BOTH_GRAPHS)
    print("module-level:", *top, "with imports inside functions:", *every, sep="\n")
    assert [report.splitlines()[0] for report in top] == ["planted.a -> planted.b -> planted.a"]
    assert [report.splitlines()[0] for report in every] == [
        "planted.a -> planted.b -> planted.a", "planted.c -> planted.d -> planted.c",
        "planted.f -> planted.g -> planted.f"]
    assert "planted/c.py:2, function-level" in every[1]


def test_a_cycle_planted_in_a_copy_of_harness_is_found(tmp_path):
    """The project's own check, on a copy of harness/ where core.errors imports the sweep engine."""
    shutil.copytree(ROOT / "harness", tmp_path / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    errors = tmp_path / "harness" / "core" / "errors.py"
    errors.write_text(errors.read_text(encoding="utf-8") + "\nfrom attnbench.engine.sweep import RunInterrupted\n",
                      encoding="utf-8")
    cycles = cycle_report(find_modules(tmp_path / "harness", "attnbench"), ("top",))
    print(*cycles, sep="\n")
    assert [report.splitlines()[0] for report in cycles] == [
        "attnbench.core.errors -> attnbench.engine.sweep -> attnbench.core.errors"]
    assert not cycle_report(find_modules(ROOT / "harness", "attnbench"), ("top",))


def test_a_planted_private_import_and_torch_import_are_found(tmp_path):
    modules = _write_package(tmp_path, {
        "plug/__init__.py": "from attnbench.core.case import Case\nfrom attnbench import Variant\n",
        "plug/light.py": "from plug import heavy\n",
        "plug/heavy.py": "import json\ndef f():\n    import numpy\nimport torch.nn\n",
    })
    offences = private_harness_imports(modules)
    assert len(offences) == 1 and "plug imports attnbench.core.case" in offences[0]
    assert import_time_path(modules, "plug.light", "torch") == ["plug.light", "plug.heavy", "torch"]
    assert import_time_path(modules, "plug.heavy", "numpy") is None  # only inside a function
