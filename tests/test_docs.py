"""Every code block in docs/ runs in the test suite, or says why not.

The line before a fenced block (blank lines skipped) may hold a directive comment:

* ``<!-- doc: run -->`` (the default for ``python`` blocks): a python block is executed in a fresh temp
  folder; a ``bash``/``console`` block has each ``zigraph …`` command (``$ zigraph …`` in a console
  transcript) run through ``zigraph.cli.main``, which must exit 0. ``setup=NAME`` first prepares the
  folder and the names the block uses (``SETUPS`` below); ``continue`` runs in the namespace and folder
  of the file's previous block; ``slow`` marks the test slow (a full-size model). Functions named
  ``test_*`` that a block defines are called.
* ``<!-- doc: tested-by tests/FILE.py::TEST -->``: that test runs this block's code (it must exist and
  name the document).
* ``<!-- doc: no-run REASON -->``: output, a transcript of a long run, configuration of another
  project; the reason is required.

Op and optimizer registrations a block makes are undone after it, so blocks cannot leak into other tests.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
DIRECTIVE = re.compile(r"<!--\s*doc:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    code: str
    directive: str  # "" when the line before the fence holds none

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(folder: Path = DOCS) -> list[Block]:
    out = []
    for path in sorted(folder.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            before = [ln for ln in text[: m.start()].splitlines() if ln.strip()]
            hit = DIRECTIVE.search(before[-1]) if before else None
            line = text[: m.start()].count("\n") + 1
            out.append(Block(path.name, line, m.group(1), m.group(2), hit.group(1) if hit else ""))
    return out


def plan(block: Block) -> tuple[str, dict[str, str]]:
    """(action, options): action is run, tested-by, no-run or a reason the block is not covered."""
    words = block.directive.split()
    if not words:
        return ("run", {}) if block.lang == "python" else ("missing", {})
    action, rest = words[0], words[1:]
    if action == "no-run":
        return ("no-run", {"reason": " ".join(rest)})
    if action == "tested-by":
        return ("tested-by", {"test": " ".join(rest)})
    if action in ("run", "continue"):
        opts = dict(w.split("=", 1) if "=" in w else (w, "") for w in rest)
        return (action, opts)
    return ("missing", {})


# -- setups: the files and names a block takes for granted ------------------------------------------


def _onnx_model(tmp: Path, ns: dict[str, Any]) -> None:
    """``model.onnx``: a small CNN with residual blocks (prunable groups and erasable structures)."""
    import onnx

    from tests.test_cli_erase import stacked

    onnx.save(stacked(), str(tmp / "model.onnx"))


def _torch_model(tmp: Path, ns: dict[str, Any]) -> None:
    """``model`` (a small residual CNN), an example input ``x``, a ``loader`` of random batches,
    ``loss_fn``, and the prune-mode ``analysis``."""
    import torch

    import frontends
    import graphcore
    from tests.factories import residual_stack

    model = residual_stack()
    x = torch.randn(1, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    loader = [
        (torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)) for _ in range(4)
    ]
    import construct
    import optimizers

    ns.update(model=model, x=x, loader=loader, loss_fn=torch.nn.functional.cross_entropy, torch=torch)
    ns.update(graphcore=graphcore, frontends=frontends, optimizers=optimizers, construct=construct)
    ns["analysis"] = graphcore.analyze(frontends.load(model, (x,)))


SETUPS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "onnx_model": _onnx_model,
    "torch_model": _torch_model,
}


# -- running ------------------------------------------------------------------------------------------


@pytest.fixture
def restore_registries():
    """Undo the op rules and optimizers a block registers (both tables are global)."""
    import optimizers.registry as opt_registry
    from graphcore.ops import registry as op_registry

    rules, opts = dict(op_registry._RULES), dict(opt_registry._registry)
    yield
    op_registry._RULES.clear()
    op_registry._RULES.update(rules)
    opt_registry._registry.clear()
    opt_registry._registry.update(opts)


def _commands(block: Block) -> list[list[str]]:
    """The zigraph command lines of a bash or console block (a console block's are the ``$`` lines)."""
    out = []
    for raw in block.code.splitlines():
        line = raw.strip()
        if block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        argv = shlex.split(line, comments=True)
        if argv and argv[0] == "zigraph":
            out.append(argv[1:])
    return out


def _execute(block: Block, ns: dict[str, Any], tmp: Path, capsys) -> None:
    if block.lang == "python":
        code = compile(block.code, f"docs/{block.doc}:{block.line}", "exec")
        exec(code, ns)
        for name, fn in list(ns.items()):
            if (
                name.startswith("test_")
                and callable(fn)
                and getattr(fn, "__module__", None) in (None, "builtins", ns.get("__name__"))
            ):
                fn()
        return
    from zigraph.cli import main

    commands = _commands(block)
    assert commands, (
        f"docs/{block.doc}:{block.line}: a {block.lang or 'plain'} block to run has no zigraph command"
    )
    for argv in commands:
        code = main(argv)
        captured = capsys.readouterr()
        assert code == 0, (
            f"docs/{block.doc}:{block.line}: zigraph {shlex.join(argv)} exited {code}: {captured.err}"
        )


BLOCKS = blocks()
RUN = [b for b in BLOCKS if plan(b)[0] in ("run", "continue")]


def test_every_block_in_docs_is_run_or_says_why_not():
    problems = []
    for b in BLOCKS:
        action, opts = plan(b)
        if action == "missing":
            problems.append(
                f"{b.id} ({b.lang or 'plain'}): no <!-- doc: run | tested-by … | no-run REASON --> before it"
            )
        elif action == "no-run" and not opts["reason"]:
            problems.append(f"{b.id}: no-run needs a reason")
        elif action == "tested-by":
            file, _, test = opts["test"].partition("::")
            path = ROOT / file
            text = path.read_text() if path.exists() else ""
            if not re.search(rf"^def {re.escape(test)}\(", text, re.M) or b.doc not in text:
                problems.append(f"{b.id}: {opts['test']} does not exist or does not read docs/{b.doc}")
        elif action in ("run", "continue") and opts.get("setup", "") not in ("", *SETUPS):
            problems.append(f"{b.id}: unknown setup {opts['setup']!r}")
    assert not problems, "\n".join(problems)


def _groups() -> list[list[Block]]:
    """Runnable blocks, a ``continue`` block joined to the one before it (they share a namespace)."""
    out: list[list[Block]] = []
    for b in RUN:
        if plan(b)[0] == "continue" and out and out[-1][0].doc == b.doc:
            out[-1].append(b)
        else:
            out.append([b])
    return out


def _params() -> list[Any]:
    """One test per chain; ``run slow`` (a full-size model) marks it slow, like the zoo tests."""
    return [
        pytest.param(chain, id=chain[0].id, marks=[pytest.mark.slow] if "slow" in plan(chain[0])[1] else [])
        for chain in _groups()
    ]


@pytest.mark.parametrize("chain", _params())
def test_doc_block_runs(chain, tmp_path, monkeypatch, capsys, restore_registries):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    ns: dict[str, Any] = {"__name__": "__doc_block__"}
    for b in chain:
        setup = plan(b)[1].get("setup")
        if setup:
            SETUPS[setup](tmp_path, ns)
        _execute(b, ns, tmp_path, capsys)


def test_the_directive_check_can_fail(tmp_path):
    (tmp_path / "a.md").write_text(
        "x\n\n```bash\nzigraph demo\n```\n\n<!-- doc: no-run -->\n```text\nout\n```\n"
    )
    found = blocks(tmp_path)
    assert [plan(b)[0] for b in found] == ["missing", "no-run"] and plan(found[1])[1]["reason"] == ""


def test_ci_runs_exactly_the_readme_test_command():
    """README's second set-up command ends in the test run; .ci/run must run that same command."""
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set up") :]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, re.S)[:2]
    assert len(commands) == 2 and "zigraph demo" in commands[0], commands
    test_command = commands[1].split("&&")[-1].strip()
    assert test_command.startswith("HYPOTHESIS_PROFILE=ci python -m pytest")
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci, f".ci/run does not run README's test command {test_command!r}"
