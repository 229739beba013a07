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
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="time budget (default 5)")
    p.add_argument("--seed", type=int, default=0, help="reproduces a run's choices (default 0)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch-side properties")
    p.add_argument("--no-dynamo", action="store_true", help="TorchScript exports only (faster)")
    p.add_argument("--malformed-share", type=float, default=0.35, help="share of the time for mutants")
    p.add_argument("--no-erase", action="store_true", help="skip the erasing-mode rounds (on by default)")
    p.add_argument("--cli-every", type=int, default=5, help="judge every N-th mutant through the CLI too")
    args = p.parse_args(argv)
    if args.minutes <= 0 or not 0 <= args.malformed_share < 1:
        p.error("--minutes must be positive and --malformed-share in [0, 1)")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    warnings.simplefilter("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    from fuzz.runner import run, summary

    def log(line: str) -> None:
        print(line, flush=True)

    print(f"fuzzing for {args.minutes:g} min with seed {args.seed}", flush=True)
    t0 = time.monotonic()
    stats = run(
        args.minutes,
        seed=args.seed,
        torch_side=not args.no_torch,
        slow_exporters=not args.no_dynamo,
        malformed_share=args.malformed_share,
        cli_every=args.cli_every,
        log=log,
        erase=not args.no_erase,
    )
    print("\n" + summary(stats, time.monotonic() - t0), flush=True)
    return 1 if stats.failed else 0


if __name__ == "__main__":
    sys.exit(main())
