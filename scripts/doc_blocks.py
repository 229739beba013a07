"""The generated block of a hand-written document: README.md keeps a zoo table and benchmark figures
between two HTML comment markers, which the scripts here rewrite without touching the rest."""

from __future__ import annotations

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
