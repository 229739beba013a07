"""``python -m fuzz --minutes N [--seed S]``: fuzz within a time budget and print what was found.

Exit status: 0 when no property failed, 1 when one did (each distinct failure is printed as a
ready-to-paste pytest regression test) or when the frontends check skipped more examples than its
bound (``fuzz.properties.AGREE_SKIP_BOUND``; the summary prints the rate), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def _budget_bar(seconds: float) -> Iterator[Callable[[str], None]]:
    """A bar of the time budget on stderr while the rounds run (a terminal only; a pipe gets the plain
    log lines). What the runner logs — progress, each failure's regression test — prints above it."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda line: print(line, flush=True)
        return
    with Progress(
        TextColumn("fuzzing"), BarColumn(), TimeElapsedColumn(), TextColumn("elapsed,"),
        TimeRemainingColumn(), TextColumn("left"), console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("budget", total=seconds)
        start = time.monotonic()

        def log(line: str) -> None:
            bar.update(task, completed=min(seconds, time.monotonic() - start))
            bar.console.print(line, markup=False, highlight=False, soft_wrap=True)

        ticker = _Ticker(lambda: bar.update(task, completed=min(seconds, time.monotonic() - start)))
        try:
            yield log
        finally:
            ticker.stop()


class _Ticker:
    """Moves the bar once a second from a daemon thread (the rounds log only now and then)."""

    def __init__(self, tick: Callable[[], None]) -> None:
        import threading

        self._stop = threading.Event()
        self._tick = tick
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._tick()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="time budget (default 5)")
    p.add_argument("--seed", type=int, default=0, help="reproduces a run's choices (default 0)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch-side properties")
    p.add_argument("--no-dynamo", action="store_true", help="TorchScript exports only (faster)")
    p.add_argument("--malformed-share", type=float, default=0.35, help="share of the time for mutants")
    p.add_argument("--no-erase", action="store_true", help="skip the erasing-mode rounds (on by default)")
    p.add_argument("--cli-every", type=int, default=5, help="judge every N-th mutant through the CLI too")
    p.add_argument("--max-layers", type=int, default=6, help="top-level layers of a network (default 6)")
    p.add_argument("--max-depth", type=int, default=2, help="nesting of branches in a network (default 2)")
    args = p.parse_args(argv)
    if args.minutes <= 0 or not 0 <= args.malformed_share < 1:
        p.error("--minutes must be positive and --malformed-share in [0, 1)")
    if args.max_layers < 1 or args.max_depth < 0:
        p.error("--max-layers must be at least 1 and --max-depth at least 0")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    warnings.simplefilter("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    from fuzz.runner import run, summary

    print(f"fuzzing for {args.minutes:g} min with seed {args.seed}", flush=True)
    t0 = time.monotonic()
    with _budget_bar(60.0 * args.minutes) as log:
        stats = run(
            args.minutes,
            seed=args.seed,
            torch_side=not args.no_torch,
            slow_exporters=not args.no_dynamo,
            malformed_share=args.malformed_share,
            cli_every=args.cli_every,
            log=log,
            erase=not args.no_erase,
            max_layers=args.max_layers,
            max_depth=args.max_depth,
        )
    print("\n" + summary(stats, time.monotonic() - t0), flush=True)
    return 1 if stats.failed else 0


if __name__ == "__main__":
    sys.exit(main())
