"""The generated block of a hand-written document: README.md keeps a zoo table and benchmark figures
between two HTML comment markers, which the scripts here rewrite without touching the rest; and the
stamp that says which engine generated it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from graphcore.report import write_json_atomic as _write_atomic  # writes any text atomically


def replace_marked_block(path: Path, start: str, end: str, body: str) -> bool:
    """Put ``body`` between the markers ``start`` and ``end`` of ``path``; False when it has none."""
    if not path.exists():
        return False
    text = path.read_text(encoding="utf-8")
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        return False
    _write_atomic(path, text[:i] + f"{start}\n{body}\n{end}" + text[j + len(end) :])
    return True


def engine_version() -> str:
    """The checkout and commit of the engine this process imports (the first sys.path entry holding
    zigraph), and whether its engine packages had uncommitted changes: a generated table says what
    produced it."""
    import zigraph

    where = Path(zigraph.__file__).resolve().parents[1]
    paths = ["graphcore", "frontends", "construct", "zigraph"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=where, capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return f"{where} (an unknown commit)"
    return f"{where.name}@{head}{' (uncommitted engine changes)' if dirty else ''}"
