"""Where the command line writes: rich consoles for stdout and stderr, built when first asked for.

Colour only on a terminal: rich turns it off when the stream is not a TTY and when ``NO_COLOR`` is set;
``FORCE_COLOR`` turns it on. A console is made per call of :func:`stdout` so that it writes to the
``sys.stdout`` of that moment (pytest's capture swaps it). Off a terminal the width is ``COLUMNS`` or
120, so a piped table is not squeezed into rich's default of 80 columns.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["plain_text", "progress", "quiet_output", "show", "status", "stderr", "stdout"]

_quiet = False


@contextmanager
def quiet_output(quiet: bool = True) -> Iterator[None]:
    """``--quiet`` while the block runs: nothing on stdout but what a script asked for (``--json -``), no
    progress on stderr. The previous setting comes back after, so one call cannot silence the next."""
    global _quiet
    before, _quiet = _quiet, _quiet or quiet
    try:
        yield
    finally:
        _quiet = before


def _console(file: IO[str], quiet: bool) -> Console:
    tty = file.isatty() if hasattr(file, "isatty") else False
    width = None if tty else int(os.environ.get("COLUMNS", "") or 120)
    return Console(file=file, width=width, quiet=quiet, highlight=False, soft_wrap=False, emoji=False)


def stdout(quiet: bool | None = None) -> Console:
    """The console for results (tables, verdicts); silent under ``--quiet``."""
    return _console(sys.stdout, _quiet if quiet is None else quiet)


def stderr() -> Console:
    """The console for progress and spinners: stderr, so that ``--json -`` on stdout stays parseable."""
    return _console(sys.stderr, _quiet)


def plain_text(*renderables: Any, width: int = 120) -> str:
    """What the renderables print as on a file: no colour, no terminal codes, trailing spaces stripped."""
    import io

    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, highlight=False, emoji=False).print(*renderables)
    return "\n".join(line.rstrip() for line in buf.getvalue().rstrip("\n").splitlines())


def show(*renderables: Any) -> None:
    """Results on stdout: styled on a terminal; plain text without trailing padding on a file or pipe."""
    console = stdout()
    if console.quiet:
        return
    if console.is_terminal:
        console.print(*renderables)
        return
    sys.stdout.write(plain_text(*renderables, width=console.width) + "\n")


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner on stderr while long work runs; nothing when stderr is not a terminal or under --quiet."""
    console = stderr()
    if not console.is_terminal or console.quiet:
        yield
        return
    with console.status(message):
        yield


def progress(disable: bool = False) -> Progress:
    """A progress display for long loops (training, fuzzing) on stderr; hidden off a terminal."""
    console = stderr()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disable or console.quiet or not console.is_terminal,
    )
