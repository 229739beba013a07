"""DESIGN.md's floors: graphcore imports no framework and no package of ours; nothing imports upward."""

from __future__ import annotations

import ast
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
