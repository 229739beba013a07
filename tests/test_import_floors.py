"""DESIGN.md's floors: graphcore imports no framework and no package of ours; nothing imports upward;
and no module imports itself back through others (no cycles, inside a package either).

An import inside a function counts like one at the top: it only postpones the cycle to the first call,
and the two modules still cannot be read, tested or moved one without the other. So do imports under
``if TYPE_CHECKING:``: a cycle hidden from the interpreter is still one for the reader.
"""

from __future__ import annotations

import ast
import re
import textwrap
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = {"graphcore", "frontends", "optimizers", "construct", "fuzz", "zigraph"}
ALLOWED = {
    "graphcore": {"graphcore"},
    "frontends": {"graphcore", "frontends"},
    "optimizers": {"graphcore", "optimizers"},
    "construct": {"graphcore", "frontends", "construct"},
    "fuzz": OURS - {"zigraph"},
    "zigraph": OURS - {"fuzz"},
}
FRAMEWORKS = {"torch", "onnx", "onnxruntime", "onnx_ir", "tensorflow", "jax"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_packages_import_only_downward():
    problems = []
    for pkg, allowed in ALLOWED.items():
        for path in (ROOT / pkg).rglob("*.py"):
            bad = (_imports(path) & OURS) - allowed
            if bad:
                problems.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not problems, "\n".join(problems)


def test_graphcore_imports_no_framework():
    problems = []
    for path in (ROOT / "graphcore").rglob("*.py"):
        bad = _imports(path) & FRAMEWORKS
        if bad:
            problems.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not problems, "\n".join(problems)


# Distributions whose import name differs from their own, and the one needed without an import.
IMPORT_NAMES = {"protobuf": "google", "scikit-learn": "sklearn", "onnx-ir": "onnx_ir"}
NEEDED_UNIMPORTED = {
    "onnxscript": "torch.onnx.export(dynamo=True) runs it (construct.to_onnx)",
    "ml_dtypes": "onnx imports it; declared to keep out the release whose import alone takes 1.5 s",
}


def test_every_core_dependency_is_imported():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0] for d in project["dependencies"]}
    imported = set().union(*(_imports(p) for pkg in OURS for p in (ROOT / pkg).rglob("*.py")))
    unused = {d for d in declared - set(NEEDED_UNIMPORTED) if IMPORT_NAMES.get(d, d) not in imported}
    assert not unused, f"declared in pyproject.toml but imported by none of {sorted(OURS)}: {sorted(unused)}"


# -- cycles -------------------------------------------------------------------------------------------


def _module_name(path: Path, root: Path) -> str:
    """``pkg/sub/mod.py`` -> ``pkg.sub.mod``; a package's ``__init__.py`` is the package itself."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(module: str, is_package: bool, target: str | None, level: int) -> str:
    """The absolute name a (possibly relative) ``from`` import inside ``module`` refers to."""
    if level == 0:
        return target or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _owner(name: str, modules: Mapping[str, Path]) -> str | None:
    """The module of ours that executes when ``name`` is imported: itself, or its longest known prefix."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, anywhere in its body (functions included).

    An import statement depends on every module it spells out: ``import pkg.sub`` on ``pkg`` (the
    name it binds) and ``pkg.sub``; ``from pkg import sub, name`` on ``pkg`` (its ``__init__``, which
    it reads names from) and on ``pkg.sub`` where that is a module. Relative imports are resolved
    first. The parent packages Python runs silently before ``from pkg.sub import x`` are not edges:
    the statement does not read them, and every module of a package that re-exports its modules
    would otherwise be in a cycle with its ``__init__``.
    """
    modules = {_module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    targets += [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(name, is_package, node.module, node.level)
                targets += [base, *(f"{base}.{a.name}" for a in node.names)]
        owners = {_owner(t, modules) for t in targets}
        graph[name] = {o for o in owners if o is not None and o != name}
    return graph


def _strongly_connected(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's components (iterative, so a long import chain cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
                components.append(sorted(component))
    return components


def _one_cycle(graph: Mapping[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as the path a reader can follow."""
    members = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if child not in parent:
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"{component} is not a cycle")


def import_cycles(root: Path, packages: Iterable[str]) -> list[list[str]]:
    """One cycle per strongly connected set of modules, each as ``[a, b, ..., a]``."""
    graph = import_graph(root, packages)
    return [_one_cycle(graph, c) for c in _strongly_connected(graph) if len(c) > 1]


def _describe(root: Path, packages: Iterable[str]) -> str:
    graph = import_graph(root, packages)
    lines = []
    for component in _strongly_connected(graph):
        if len(component) > 1:
            cycle = _one_cycle(graph, component)
            rest = sorted(set(component) - set(cycle))
            lines.append(" -> ".join(cycle) + (f" (also in the cycle: {', '.join(rest)})" if rest else ""))
    return "\n".join(lines)


def test_no_import_cycles():
    cycles = _describe(ROOT, sorted(OURS))
    assert not cycles, "import cycles (imports inside functions count):\n" + cycles


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_cycle_check_finds_a_cycle_between_packages(tmp_path):
    _write(tmp_path, {
        "low/__init__.py": "",
        "low/base.py": "import high.top\n",
        "high/__init__.py": "",
        "high/top.py": "from low import base\n",
    })  # fmt: skip
    assert import_cycles(tmp_path, ["low", "high"]) == [["high.top", "low.base", "high.top"]]


def test_the_cycle_check_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/export.py": "from pkg.verify import check\n\ndef export():\n    return check()\n",
        "pkg/verify.py": "def check():\n    from pkg.export import export\n    return export\n",
    })  # fmt: skip
    assert import_cycles(tmp_path, ["pkg"]) == [["pkg.export", "pkg.verify", "pkg.export"]]


def test_the_cycle_check_finds_a_cycle_inside_a_package_through_its_init(tmp_path):
    # frontends/__init__ -> torch_frontend -> torch_aten -> frontends (reading the package's namespace),
    # written with relative imports.
    _write(tmp_path, {
        "front/__init__.py": "from .torch_frontend import load_torch\n\ndef load():\n    pass\n",
        "front/torch_frontend.py": "from .torch_aten import lower\n\ndef load_torch():\n    pass\n",
        "front/torch_aten.py": "def lower():\n    from . import ops\n",
        "front/ops.py": "",
    })  # fmt: skip
    assert import_cycles(tmp_path, ["front"]) == [
        ["front", "front.torch_frontend", "front.torch_aten", "front"]
    ]


def test_the_cycle_check_accepts_imports_that_only_go_down(tmp_path):
    # An __init__ that re-exports its submodules, submodules that import siblings by their own names
    # (absolutely, relatively and inside functions) and a sub-package: no cycle.
    _write(tmp_path, {
        "pkg/__init__.py": "from pkg.high import run\nimport pkg.low\n",
        "pkg/low.py": "import math\n",
        "pkg/mid.py": "from pkg.low import math\nfrom .sub import leaf\n",
        "pkg/high.py": "def run():\n    from .mid import leaf\n    from pkg.sub.leaf import math\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/leaf.py": "from ..low import math\n",
    })  # fmt: skip
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {
        "pkg": {"pkg.high", "pkg.low"},
        "pkg.high": {"pkg.mid", "pkg.sub.leaf"},
        "pkg.low": set(),
        "pkg.mid": {"pkg.low", "pkg.sub", "pkg.sub.leaf"},
        "pkg.sub": set(),
        "pkg.sub.leaf": {"pkg.low"},
    }
    assert import_cycles(tmp_path, ["pkg"]) == []
    # The same package with one sibling reached through the package's namespace is a cycle:
    # pkg's __init__ runs pkg.high, which (when called) runs pkg.mid, which reads pkg.
    _write(tmp_path, {"pkg/mid.py": "from pkg import low\n"})
    assert import_cycles(tmp_path, ["pkg"]) == [["pkg", "pkg.high", "pkg.mid", "pkg"]]
