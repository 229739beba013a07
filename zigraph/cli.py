"""The ``zigraph`` command line. Exit codes: 0 success, 1 verification failed, 2 bad input or usage,
3 internal error (a bug in zigraph: the message names the model and the stage and asks for a report),
4 written but NOT verified (verification was asked for and cannot run on this machine; the reason is
printed and in the report).

Which is which is decided in one place, ``zigraph.pipeline.stage``: a ``ZigraphError`` is the user's
(a bad file, a bad option), anything else raised inside a stage is zigraph's, and so is a model zigraph
wrote that does not load or check (never blamed on the input, nor named by its staged file)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from graphcore.errors import InternalError, ZigraphError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        sys.stderr.write(f"zigraph: error: {message} (see 'zigraph --help')\n")
        raise SystemExit(2)


def _shape(text: str) -> Any:
    from frontends.input_spec import parse_input_spec  # plain Python: no torch import

    try:
        return parse_input_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _output_args(sp: argparse.ArgumentParser, json_help: str) -> None:
    """``--quiet`` and ``--json [PATH]``, the same on every command, for scripts."""
    sp.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing but errors (and --json's report on stdout)"
    )
    sp.add_argument("--json", nargs="?", const="-", metavar="PATH", help=json_help + " ('-' or none: stdout)")


def _big_args(sp: argparse.ArgumentParser) -> None:
    """Models past protobuf's 2 GB: external data and a check that fits (zigraph.pipeline.BigOptions)."""
    sp.add_argument(
        "--external-data",
        action="store_true",
        help="write the weights as external data beside the output (default: when they pass 1.8 GB)",
    )
    sp.add_argument(
        "--external-threshold", type=int, default=1_800_000_000, metavar="BYTES",
        help="weights above this size go to external data, streamed one tensor at a time",
    )  # fmt: skip
    sp.add_argument(
        "--verify-dim", type=int, default=2, metavar="N",
        help="size of every symbolic input dimension (batch, sequence length) in the check",
    )  # fmt: skip
    sp.add_argument(
        "--verify-memory", type=float, default=None, metavar="GB",
        help="memory the check of a big model may use (default: what is available); above it the "
        "output is written and reported NOT verified (exit 4)",
    )  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    from zigraph import __version__

    p = _Parser(prog="zigraph", description="Find, train and cut zero-invariant groups; prove the result.")
    p.add_argument("--version", action="version", version=f"zigraph {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("model", help="an .onnx file, or package.module:factory for a torch model")
        sp.add_argument(
            "--input-shape",
            action="append",
            type=_shape,
            default=[],
            help="torch models: one per input, SHAPE[:DTYPE] (1,3,224,224 or 1,8:int64 for token ids)",
        )
        sp.add_argument(
            "--attention",
            choices=["dims", "heads"],
            default="dims",
            help="attention channels: head dimensions (default) or whole heads",
        )

    a = sub.add_parser("analyze", help="vertex kinds, node groups and what is prunable")
    model_args(a)
    a.add_argument("--mode", choices=["prune", "erase"], default="prune")
    _output_args(a, "write the JSON report")
    a.add_argument("--dot", metavar="PATH", help="write a Graphviz file (and an SVG when dot is installed)")
    a.add_argument("--html", metavar="PATH", help="write a self-contained interactive HTML view")
    a.add_argument(
        "--groups",
        type=int,
        default=None,
        help="groups to list in the summary (default 12; structures with --mode erase: 40)",
    )

    pr = sub.add_parser("prune", help="one-shot pruning to a smaller ONNX model, verified")
    model_args(pr)
    pr.add_argument("--sparsity", required=True, help="fraction of prunable ZIGs to remove, in [0, 1)")
    pr.add_argument("--criterion", default="l2", choices=["l2", "random"])
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument(
        "--multiple",
        default="auto",
        help="keep a multiple of N channels per group; auto (default): what its ops' kernels like; 1: off",
    )
    pr.add_argument(
        "--uniform", action="store_true", help="remove the same count per layer from each kind of group"
    )
    pr.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    pr.add_argument("--report", metavar="PATH")
    pr.add_argument("--html", metavar="PATH", help="write a self-contained HTML view of what was removed")
    pr.add_argument("--no-verify", action="store_true")
    pr.add_argument("--samples", type=int, default=3)
    _big_args(pr)
    _output_args(pr, "write the JSON report (as --report)")

    er = sub.add_parser("erase", help="one-shot erasing of whole structures (blocks, branches), verified")
    model_args(er)
    er.add_argument("--sparsity", required=True, help="fraction of erasable structures to erase, in [0, 1]")
    er.add_argument("--seed", type=int, default=0, help="seed of the verification inputs")
    er.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    er.add_argument("--report", metavar="PATH")
    er.add_argument("--html", metavar="PATH", help="write a self-contained HTML view of what was erased")
    er.add_argument("--no-verify", action="store_true")
    er.add_argument("--samples", type=int, default=3)
    _output_args(er, "write the JSON report (as --report)")

    v = sub.add_parser("verify", help="prove SMALL equals FULL with the report's removed slices zeroed")
    v.add_argument("full")
    v.add_argument("small")
    v.add_argument("--zero", required=True, metavar="REPORT", help="a report with a 'removed' list")
    v.add_argument("--samples", type=int, default=3)
    v.add_argument(
        "--rtol", type=float, default=None, help="default: by the model's dtype (fp32 1e-4, fp16, bf16, int8)"
    )
    _output_args(v, "write the verification report as JSON")

    d = sub.add_parser("demo", help="end to end on a built-in model")
    d.add_argument("--quick", action="store_true", help="a shorter run (used by the tests)")
    d.add_argument(
        "--mode", choices=["prune", "erase"], default="prune", help="DHSPG pruning or H2SPG erasing"
    )
    d.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars, no tables: the exit code says"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0)
        return int(exc.code or 0)
    try:
        return _run(args)
    except InternalError as exc:
        sys.stderr.write(f"zigraph: {exc}\n")
        return 3
    except ZigraphError as exc:
        sys.stderr.write(f"zigraph: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("zigraph: interrupted\n")
        return 130
    except MemoryError:
        sys.stderr.write("zigraph: error: out of memory while processing the model\n")
        return 2
    except OSError as exc:  # a file the user named cannot be read or written
        sys.stderr.write(f"zigraph: error: {exc}\n")
        return 2
    except Exception as exc:  # outside every stage; never a traceback: say what failed, ask for a report
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        model = getattr(args, "model", None) or getattr(args, "full", None)
        bug = InternalError(f"{type(exc).__name__}: {msg}", f"running '{args.command}' on", model)
        sys.stderr.write(f"zigraph: {bug}\n")
        return 3


def _run(args: argparse.Namespace) -> int:
    from graphcore.ops.head_dims import attention_granularity
    from zigraph.console import quiet_output

    quiet = args.quiet or getattr(args, "json", None) == "-"
    with quiet_output(quiet), attention_granularity(getattr(args, "attention", "dims")):
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "prune":
        return _prune(args)
    if args.command == "erase":
        return _erase(args)
    if args.command == "verify":
        return _verify(args)
    if args.command == "demo":
        from zigraph.demo import run_demo
        from zigraph.extras import require

        require("torch", "zigraph demo", extra="demo")
        require("sklearn", "zigraph demo (its digits data)", extra="demo")

        return run_demo(quick=args.quick, mode=args.mode, quiet=args.quiet)
    raise ZigraphError(f"unknown command {args.command}")  # pragma: no cover


def _load(args: argparse.Namespace):
    """The model in the IR; a file or factory the frontend rejects is the user's (exit 2), an exception
    the frontend did not expect is ours (exit 3)."""
    from zigraph.pipeline import load_model, stage

    with stage("loading", args.model):
        return load_model(args.model, args.input_shape)


def _analyze(args: argparse.Namespace) -> int:
    import graphcore
    from graphcore.dot import to_dot
    from graphcore.report import write_json_atomic
    from zigraph.console import status
    from zigraph.pipeline import stage
    from zigraph.summary import erase_summary_view, summary_view

    with status(f"analyzing {args.model}"):
        loaded = _load(args)
        with stage("analysing", args.model):  # an AnalysisError is the model's (exit 2), anything else ours
            analysis = graphcore.analyze(loaded.graph, mode=args.mode)
            report = analysis.report()
    _html(args, loaded.graph, report, analysis)
    if args.mode == "erase":
        op_of = {n.name: n.op for n in loaded.graph.nodes}
        ops = {s.id: [op_of.get(n, "?") for n in s.segment] for s in analysis.structures}
        show(erase_summary_view(report, ops, max_structures=args.groups or 40))
    else:
        show(summary_view(report, max_groups=args.groups or 12))
    _emit_json(args.json, report.model_dump_json(indent=2) + "\n")
    if args.dot:
        write_json_atomic(args.dot, to_dot(analysis))
        show(f"graph:  {args.dot}")
        if shutil.which("dot"):
            svg = str(Path(args.dot).with_suffix(".svg"))
            subprocess.run(["dot", "-Tsvg", args.dot, "-o", svg], check=False, timeout=300)
            show(f"svg:    {svg}")
    return 0


def show(*renderables: object) -> None:
    """Print results on stdout through rich (colour only on a terminal; nothing under --quiet)."""
    from zigraph.console import show as _show

    _show(*renderables)


def _emit_json(target: str | None, text: str) -> None:
    """``--json``: the report on stdout (``-``), or written atomically to a file and named."""
    from graphcore.report import write_json_atomic

    if target is None:
        return
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_json_atomic(target, text)
    show(f"report: {target}")


def _prune(args: argparse.Namespace) -> int:
    from graphcore.widths import parse_multiple
    from zigraph.console import status
    from zigraph.pipeline import ensure_sparsity, prune
    from zigraph.summary import prune_view

    sparsity = ensure_sparsity(args.sparsity)
    multiple = parse_multiple(args.multiple)
    out = Path(args.output)
    if out.suffix != ".onnx":
        raise ZigraphError(f"-o must name an .onnx file, got {args.output!r}")
    if not args.model.endswith(".onnx") or not Path(args.model).exists():
        pass
    elif out.resolve() == Path(args.model).resolve():
        raise ZigraphError("-o must not overwrite the input model")
    with status(f"pruning {args.model}" + ("" if args.no_verify else " and verifying in onnxruntime")):
        loaded = _load(args)
        report = prune(
            loaded, sparsity, out, criterion=args.criterion, seed=args.seed, verify=not args.no_verify,
            samples=args.samples, multiple=multiple, uniform=args.uniform, big=_big_options(args),
        )  # fmt: skip
    return _finish(args, loaded.graph, report, prune_view(report))


def _erase(args: argparse.Namespace) -> int:
    from zigraph.console import status
    from zigraph.erase_pipeline import erase
    from zigraph.pipeline import ensure_sparsity
    from zigraph.summary import erase_view

    sparsity = ensure_sparsity(args.sparsity, whole=True)
    _check_output(args)
    with status(f"erasing {args.model}" + ("" if args.no_verify else " and verifying in onnxruntime")):
        loaded = _load(args)
        report = erase(
            loaded, sparsity, args.output, seed=args.seed, verify=not args.no_verify, samples=args.samples
        )
    return _finish(args, loaded.graph, report, erase_view(report))


def _finish(args: argparse.Namespace, graph: object, report: Any, view: object) -> int:
    """What prune and erase do with their report: --report, the table, --json, --html; the exit code
    says whether the written model verified."""
    from graphcore.report import write_json_atomic
    from zigraph.pipeline import report_json

    if args.report:
        write_json_atomic(args.report, report_json(report))
    show(view)
    _emit_json(args.json, report_json(report))
    _html(args, graph, report)
    ver = report.result.verification if report.result is not None else None
    if getattr(report.result, "unverified", None):
        sys.stderr.write(f"zigraph: written but NOT verified: {report.result.unverified}\n")
        return 4
    return 1 if ver is not None and not ver.passed else 0


def _big_options(args: argparse.Namespace) -> Any:
    from zigraph.pipeline import BigOptions

    if args.verify_dim < 1 or args.samples < 1:
        raise ZigraphError("--verify-dim and --samples must be at least 1")
    memory = None if args.verify_memory is None else int(args.verify_memory * 1e9)
    return BigOptions(
        external=True if args.external_data else None,
        threshold=args.external_threshold,
        verify_dim=args.verify_dim,
        verify_memory=memory,
    )


def _html(args: argparse.Namespace, graph: object, report: object, analysis: object = None) -> None:
    """``--html PATH``: the interactive page of the analysis (and of what prune/erase removed)."""
    if not args.html:
        return
    from zigraph.html_view import write_html

    try:
        write_html(args.html, graph, report, analysis)  # type: ignore[arg-type]
    except OSError as exc:
        raise ZigraphError(f"cannot write {args.html}: {exc.strerror or exc}") from None
    show(f"html:   {args.html}")


def _check_output(args: argparse.Namespace) -> None:
    out = Path(args.output)
    if out.suffix != ".onnx":
        raise ZigraphError(f"-o must name an .onnx file, got {args.output!r}")
    if (
        args.model.endswith(".onnx")
        and Path(args.model).exists()
        and out.resolve() == Path(args.model).resolve()
    ):
        raise ZigraphError("-o must not overwrite the input model")


def _verify(args: argparse.Namespace) -> int:
    import construct
    from zigraph.console import status
    from zigraph.summary import verify_view

    try:
        data = json.loads(Path(args.zero).read_text())
    except FileNotFoundError:
        raise ZigraphError(f"{args.zero}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ZigraphError(f"{args.zero}: not a JSON report ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("removed"), list):
        raise ZigraphError(
            f"{args.zero}: the report has no 'removed' list (write it with zigraph prune --report)"
        )
    with status("verifying in onnxruntime"):
        rep = construct.verify(
            args.full, args.small, data["removed"], samples=args.samples, rtol=args.rtol, small_ours=False
        )
    show(verify_view(rep))
    _emit_json(args.json, rep.model_dump_json(indent=2) + "\n")
    return 0 if rep.passed else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
