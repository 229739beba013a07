"""The budgeted loop behind ``python -m fuzz``: architectures, then mutants of them, until time is up.

Rounds alternate. An *architecture round* is one hypothesis run of ``check_architecture`` (random
spec, removal seed, exporter); a failure is shrunk by hypothesis and kept with its minimal example. A
*malformed round* mutates exports collected in the architecture rounds and judges every mutant
in-process (:class:`fuzz.malformed.Worker`) and every ``cli_every``-th one through the real command
line. An *erase round* (on unless ``erase=False``) draws super-networks with removable branches
(``fuzz.erase_arch``) and checks erasing mode on each (``fuzz.erase_properties``). Each distinct failure
(by a signature of its message) is printed once, as a pytest test.
"""

from __future__ import annotations

import pprint
import re
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed

from fuzz.arch import build, export
from fuzz.erase_arch import erase_architectures
from fuzz.erase_properties import EraseCount, check_erase_architecture
from fuzz.malformed import MUTATORS, Verdict, Worker, check_cli, mutate
from fuzz.properties import AgreementCount, PropertyFailure, check_architecture
from fuzz.strategies import architectures, exporters, removal_seeds

__all__ = ["Finding", "Stats", "regression_test", "run", "signature"]

_FALLBACK_SPEC = {
    "input": {"kind": "image", "shape": [1, 3, 6, 6]},
    "layers": [
        {"op": "conv", "out": 8, "k": 3, "stride": 1, "groups": 1, "bias": True},
        {"op": "bn"},
        {"op": "act", "fn": "relu"},
        {
            "op": "residual",
            "body": [{"op": "conv", "out": 8, "k": 3, "stride": 1, "groups": 1, "bias": True}],
        },
        {"op": "gap"},
        {"op": "head", "out": 3},
    ],
    "seed": 1,
}


def signature(message: str) -> str:
    """Failures that differ only in names, numbers, the mutation or the user-facing error are one bug."""
    text = re.sub(r"^\[\w+\] ", "", message).split("(zigraph: error:")[0]
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)
    return text[:120]


@dataclass
class Finding:
    """One distinct failure: its minimal example and the test that reproduces it."""

    kind: str
    message: str
    test: str
    count: int = 1


@dataclass
class Stats:
    """Counts for the final report (and for a reader who wants to know the run was not vacuous)."""

    architectures: int = 0
    with_prunable: int = 0
    zigs_removed: int = 0
    malformed: int = 0
    malformed_cli: int = 0
    accepted: int = 0
    rejected: int = 0
    exporters: Counter = field(default_factory=Counter)
    ops: Counter = field(default_factory=Counter)
    mutations: Counter = field(default_factory=Counter)
    gaps: Counter = field(default_factory=Counter)
    agreement: AgreementCount = field(default_factory=AgreementCount)
    erase_networks: int = 0
    erase: EraseCount = field(default_factory=EraseCount)
    findings: dict[str, Finding] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return sum(f.count for f in self.findings.values())

    @property
    def failed(self) -> bool:
        """A property failed, or the frontends check skipped more examples than its bound allows."""
        return bool(self.findings) or self.agreement.exceeds()


def _ops_of(layers: list[dict]) -> list[str]:
    out = []
    for layer in layers:
        out.append(layer["op"])
        for key in ("body",):
            if key in layer:
                out += _ops_of(layer[key])
        for branch in layer.get("branches", []):
            out += _ops_of(branch)
    return out


def _slug(message: str) -> str:
    words = re.findall(r"[a-z]+", message.lower())
    return "_".join(words[:6]) or "failure"


def regression_test(kind: str, example: dict, message: str, seed: int) -> str:
    """A ready-to-paste pytest test for a failing example (imports included)."""
    spec = pprint.pformat(example["spec"], width=100, sort_dicts=False)
    spec = spec.replace("\n", "\n" + " " * 11)
    doc = message.splitlines()[0][:200].replace('"""', "'''").replace("\\", "/")
    if kind == "erase":
        return (
            "from fuzz.erase_properties import check_erase_architecture\n\n\n"
            f"def test_fuzz_erase_{_slug(message)}():\n"
            f'    """python -m fuzz --seed {seed}: {doc}"""\n'
            f"    spec = {spec}\n"
            f"    check_erase_architecture(spec, seed={example['erase_seed']}, "
            f"exporter={example['exporter']!r})\n"
        )
    if kind == "architecture":
        return (
            "from fuzz.properties import check_architecture\n\n\n"
            f"def test_fuzz_{_slug(message)}():\n"
            f'    """python -m fuzz --seed {seed}: {doc}"""\n'
            f"    spec = {spec}\n"
            f"    check_architecture(spec, removal_seed={example['removal_seed']}, "
            f"exporter={example['exporter']!r})\n"
        )
    return (
        "from fuzz.arch import build, export\n"
        "from fuzz.malformed import assert_contract, mutate\n\n\n"
        f"def test_fuzz_malformed_{_slug(message)}(tmp_path):\n"
        f'    """python -m fuzz --seed {seed}: {doc}"""\n'
        f"    spec = {spec}\n"
        f"    data = mutate(export(build(spec), {example['exporter']!r}), {example['mutation']!r}, "
        f"{example['mutation_seed']})\n"
        f"    assert_contract(data, tmp_path, seed={example['mutation_seed']})\n"
    )


class _Stop(Exception):
    pass


def _round_settings(examples: int) -> settings:
    """How every fuzzing round runs hypothesis: its own seed, no database, quiet, shrink what fails."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
        report_multiple_bugs=False,
        print_blob=False,
        verbosity=Verbosity.quiet,
    )


def _architecture_round(
    stats: Stats,
    round_seed: int,
    examples: int,
    deadline: float,
    pool: list[tuple[dict, str, bytes]],
    torch_side: bool,
    slow: bool,
    run_seed: int,
    log: Callable[[str], None],
    sizes: dict[str, int] | None = None,
) -> None:
    failing: dict = {}

    @hypothesis_seed(round_seed)
    @_round_settings(examples)
    @given(
        spec=architectures(**(sizes or {})),  # type: ignore[arg-type]  # only the int bounds
        removal_seed=removal_seeds(),
        exporter=exporters(slow=slow, half=True),
    )
    def prop(spec: dict, removal_seed: int, exporter: str) -> None:
        if time.monotonic() > deadline and not failing:
            return  # over budget: let hypothesis finish quickly (but shrink a failure found in time)
        stats.architectures += 1
        stats.exporters[exporter] += 1
        stats.ops.update(_ops_of(spec["layers"]))
        kept: list[bytes] = []
        try:
            out = check_architecture(spec, removal_seed, exporter, torch_side=torch_side, keep=kept)
        except PropertyFailure as exc:
            message = str(exc)
        except Exception as exc:  # a bug in the fuzzer itself is reported like any other failure
            message = f"fuzz harness error: {type(exc).__name__}: {exc} ({traceback.format_exc(limit=-3)!r})"
        else:
            stats.with_prunable += out.prunable_groups > 0
            stats.zigs_removed += out.zigs_removed
            stats.gaps.update(signature(g) for g in out.skipped)
            stats.agreement.add(out.agreement)
            if kept and exporter != "torchscript-preserve":
                if len(pool) < 64:
                    pool.append((spec, exporter, kept[0]))
                else:
                    pool[stats.architectures % 64] = (spec, exporter, kept[0])
            return
        if _already_reported(stats, "architecture", message):
            return  # already shrunk and reported once: do not spend the budget shrinking it again
        failing.update(spec=spec, removal_seed=removal_seed, exporter=exporter, message=message)
        raise PropertyFailure(message)

    _run_round(prop, stats, "architecture", failing, run_seed, log)


def _erase_round(
    stats: Stats,
    round_seed: int,
    examples: int,
    deadline: float,
    torch_side: bool,
    slow: bool,
    run_seed: int,
    log: Callable[[str], None],
) -> None:
    """One hypothesis run of the erasing properties; a failure is shrunk and reported like the others."""
    failing: dict = {}

    @hypothesis_seed(round_seed)
    @_round_settings(examples)
    @given(spec=erase_architectures(), erase_seed=removal_seeds(), exporter=exporters(slow=slow))
    def prop(spec: dict, erase_seed: int, exporter: str) -> None:
        if time.monotonic() > deadline and not failing:
            return
        stats.erase_networks += 1
        stats.exporters[exporter] += 1
        stats.ops.update(_ops_of(spec["layers"]))
        try:
            out = check_erase_architecture(spec, erase_seed, exporter, torch_side=torch_side)
        except PropertyFailure as exc:
            message = str(exc)
        except Exception as exc:
            message = f"fuzz harness error: {type(exc).__name__}: {exc} ({traceback.format_exc(limit=-3)!r})"
        else:
            stats.erase.add(out)
            return
        if _already_reported(stats, "erase", message):
            return
        failing.update(spec=spec, erase_seed=erase_seed, exporter=exporter, message=message)
        raise PropertyFailure(message)

    _run_round(prop, stats, "erase", failing, run_seed, log)


def _already_reported(stats: Stats, kind: str, message: str) -> bool:
    known = stats.findings.get(signature(message))
    return known is not None and known.kind == kind


def _run_round(
    prop: Callable[[], None],
    stats: Stats,
    kind: str,
    failing: dict,
    run_seed: int,
    log: Callable[[str], None],
) -> None:
    """Run one hypothesis property; a failure it shrank is counted once and printed as a regression test."""
    try:
        prop()
    except Exception:  # the failure, or hypothesis's report that its replay did not fail (Flaky)
        if not failing:
            raise
        message = failing["message"]
        sig = signature(message)
        if sig in stats.findings:
            stats.findings[sig].count += 1
            return
        test = regression_test(kind, failing, message, run_seed)
        stats.findings[sig] = Finding(kind, message, test)
        log(f"\nFAILURE ({kind}): {message}\n--- regression test ---\n{test}")


def _malformed_round(
    stats: Stats,
    rng: np.random.Generator,
    until: float,
    pool: list[tuple[dict, str, bytes]],
    worker: Worker,
    cli_every: int,
    workdir: Path,
    run_seed: int,
    log: Callable[[str], None],
) -> None:
    names = sorted(MUTATORS)
    tried = 0
    # At least one input a round: on a loaded machine an architecture round can spend the whole budget,
    # and a run that tried no malformed input at all would still read as clean.
    while tried == 0 or time.monotonic() < until:
        tried += 1
        spec, exporter, base = pool[int(rng.integers(0, len(pool)))]
        name = names[int(rng.integers(0, len(names)))]
        mseed = int(rng.integers(0, 2**31))
        stats.malformed += 1
        stats.mutations[name] += 1
        try:
            data = mutate(base, name, mseed)
            verdicts: list[Verdict] = [worker.judge(data, mseed)]
            if cli_every and stats.malformed % cli_every == 0:
                stats.malformed_cli += 1
                verdicts += check_cli(data, workdir)
        except Exception as exc:  # the harness itself failed: report it, keep fuzzing
            verdicts = [Verdict(False, False, f"fuzz harness error: {type(exc).__name__}: {exc}")]
        if verdicts[0].ok:
            if verdicts[0].accepted:
                stats.accepted += 1
            else:
                stats.rejected += 1
        for v in verdicts:
            if v.ok:
                continue
            message = f"[{name}] {v.message}"
            sig = signature(message)
            if sig in stats.findings:
                stats.findings[sig].count += 1
                continue
            example = {"spec": spec, "exporter": exporter, "mutation": name, "mutation_seed": mseed}
            test = regression_test("malformed", example, message, run_seed)
            stats.findings[sig] = Finding("malformed", message, test)
            log(f"\nFAILURE (malformed input): {message}\n--- regression test ---\n{test}")


def run(
    minutes: float,
    seed: int = 0,
    torch_side: bool = True,
    slow_exporters: bool = True,
    malformed_share: float = 0.35,
    cli_every: int = 5,
    log: Callable[[str], None] = print,
    erase: bool = True,
    max_layers: int = 6,
    max_depth: int = 2,
) -> Stats:
    """Fuzz for ``minutes``; every distinct failure is logged once with its regression test.

    ``max_layers`` and ``max_depth`` bound the pruning rounds' networks (``fuzz.strategies.architectures``):
    the defaults keep an example at a fraction of a second; long runs can afford deeper ones."""
    sizes = {"max_layers": max_layers, "max_depth": max_depth}
    start = time.monotonic()
    deadline = start + 60.0 * minutes
    rng = np.random.default_rng(seed)
    stats = Stats()
    pool: list[tuple[dict, str, bytes]] = []
    worker = Worker()
    last_progress = start
    try:
        with tempfile.TemporaryDirectory(prefix="zigraph-fuzz-") as tmp:
            round_no = 0
            while time.monotonic() < deadline:
                round_no += 1
                t0 = time.monotonic()
                _architecture_round(
                    stats,
                    seed * 100_003 + round_no,
                    15,
                    deadline,
                    pool,
                    torch_side,
                    slow_exporters,
                    seed,
                    log,
                    sizes,
                )
                if erase and time.monotonic() < deadline:
                    _erase_round(
                        stats, seed * 100_003 + round_no, 8, deadline, torch_side, slow_exporters, seed, log
                    )
                spent = time.monotonic() - t0
                if not pool:
                    pool.append((_FALLBACK_SPEC, "torchscript", export(build(_FALLBACK_SPEC), "torchscript")))
                share = malformed_share / max(1e-6, 1.0 - malformed_share)
                until = min(deadline, time.monotonic() + spent * share)
                _malformed_round(stats, rng, until, pool, worker, cli_every, Path(tmp), seed, log)
                if time.monotonic() - last_progress > 60:
                    last_progress = time.monotonic()
                    log(progress_line(stats, time.monotonic() - start))
    finally:
        worker.close()
    return stats


def progress_line(stats: Stats, seconds: float) -> str:
    return (
        f"[{seconds / 60:5.1f} min] architectures {stats.architectures}, malformed inputs {stats.malformed} "
        f"({stats.malformed_cli} through the CLI), failures {stats.failures} ({len(stats.findings)} "
        f"distinct), frontends check skipped {stats.agreement.skipped} of {stats.agreement.examples}, "
        f"erase networks {stats.erase_networks} ({stats.erase.selections} selections verified)"
    )


def summary(stats: Stats, seconds: float) -> str:
    """The final report: counts, what was covered, and the distinct failures."""
    lines = [
        f"fuzzed for {seconds / 60:.1f} min",
        f"architectures tried   {stats.architectures} (with a prunable group: {stats.with_prunable}; "
        f"ZIGs removed and verified: {stats.zigs_removed})",
        f"exporters             {dict(stats.exporters)}",
        f"malformed inputs      {stats.malformed} ({stats.malformed_cli} also through the CLI; "
        f"still valid and verified: {stats.accepted}, rejected cleanly: {stats.rejected})",
        f"failures              {stats.failures} ({len(stats.findings)} distinct)",
        f"frontends compared    {stats.agreement.describe()}",
    ]
    if stats.agreement.exceeds():
        lines.append("FAILURE: check_frontends_agree skipped more examples than its bound allows")
    if stats.erase_networks:
        lines.append(f"erasing: super-networks tried {stats.erase_networks}")
        lines += ["  " + line for line in stats.erase.describe().splitlines()]
    common = ", ".join(f"{op} {n}" for op, n in stats.ops.most_common())
    lines.append(f"ops drawn             {common}")
    if stats.gaps:
        lines.append("frontend coverage gaps (conservative, not failures):")
        lines += [f"  {n:4d}  {gap[:150]}" for gap, n in stats.gaps.most_common(8)]
    for f in stats.findings.values():
        lines.append(f"\n{f.kind} failure (seen {f.count}x): {f.message[:500]}\n{f.test}")
    return "\n".join(lines)
