"""Property-based fuzzing in CI: random architectures prune exactly, malformed inputs fail cleanly.

The example counts come from the hypothesis profile (tests/conftest.py; CI runs ``HYPOTHESIS_PROFILE=ci``,
derandomized, so CI is reproducible). ``python -m fuzz --minutes N`` runs the same properties for as
long as you like; this file keeps the whole set under two minutes on two cores.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import construct
from fuzz.arch import ACTIVATIONS, build, channels, export, output_states
from fuzz.malformed import (
    MUTATORS,
    CliResult,
    assert_contract,
    check_cli,
    judge_cli,
    library_verdict,
    mutate,
)
from fuzz.properties import (
    AGREE_SKIP_BOUND,
    AgreementCount,
    PropertyFailure,
    check_architecture,
    check_frontends_agree,
    check_onnx,
    check_optimizer,
    torch_construct_available,
)
from fuzz.runner import Stats, regression_test, run, signature, summary
from fuzz.strategies import ALL_OPS, architectures, exporters, removal_seeds
from zigraph.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")

# -- architectures ------------------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=architectures())
def test_specs_build_and_their_shapes_are_what_the_grammar_says(spec):
    # Cheap (no export), so many examples: a grammar bug wastes fuzzing time on invalid networks.
    built = build(spec)
    with torch.no_grad():
        y = built.module(*built.inputs)
    y = y[0] if isinstance(y, tuple) else y
    state = output_states(spec)
    expected = (1, *state[1:]) if state[0] != "image" else (1, state[1], state[2], state[3])
    assert tuple(y.shape) == expected and channels(state) == y.shape[1 if state[0] == "image" else -1]


def test_random_architectures_prune_exactly():
    # ONNX: analysis is consistent, a random removal verifies in onnxruntime, and so does a second
    # round on the pruned model; torch: the same through to_torch, and both frontends agree. The
    # frontends check may set an example aside (a coverage gap), but not more than its bound allows:
    # the examples are derandomized in CI, so the rate is a fixed number a change can only move on
    # purpose (and the bound applies from ten examples on, not the forty a timed run waits for).
    agreement = AgreementCount()

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(spec=architectures(), removal_seed=removal_seeds(), exporter=exporters(half=True))
    def prop(spec, removal_seed, exporter):
        agreement.add(check_architecture(spec, removal_seed, exporter).agreement)

    prop()
    assert agreement.examples >= 10, agreement.describe()
    agreement.check(minimum=10)


def test_the_frontends_check_counts_what_it_compared_and_what_it_skipped():
    compared = check_frontends_agree({
        "input": {"kind": "seq", "shape": [1, 4, 6]},
        "layers": [{"op": "linear", "out": 8, "bias": True}, {"op": "act", "fn": "relu"},
                   {"op": "head", "out": 3}],
        "seed": 0,
    }).agreement  # fmt: skip
    assert (compared.examples, compared.skipped, compared.empty) == (1, 0, 0) and compared.axes > 0
    # The exporter writes a bias-free Linear as a MatMul with a transposed copy of the weight under a
    # new name: no parameter axis is named alike on both sides, so nothing could be compared.
    renamed = check_frontends_agree({
        "input": {"kind": "image", "shape": [1, 4, 4, 8]},
        "layers": [{"op": "gap"}, {"op": "linear", "out": 10, "bias": False}],
        "seed": 47976,
    }).agreement  # fmt: skip
    assert (renamed.examples, renamed.skipped) == (1, 1)
    empty = check_frontends_agree({
        "input": {"kind": "image", "shape": [1, 1, 1, 1]}, "layers": [{"op": "act", "fn": "relu"}], "seed": 0
    }).agreement  # fmt: skip
    assert (empty.examples, empty.skipped, empty.empty) == (0, 0, 1)


def test_the_frontends_skip_rate_is_bounded_and_reported():
    at_bound = AgreementCount(examples=40, skipped=int(40 * AGREE_SKIP_BOUND))
    assert not at_bound.exceeds()
    at_bound.check()
    over = AgreementCount(examples=40, skipped=int(40 * AGREE_SKIP_BOUND) + 1)
    assert over.exceeds()
    with pytest.raises(PropertyFailure, match="skipped too often"):
        over.check()
    assert not AgreementCount(examples=39, skipped=39).exceeds()  # too few examples to judge a rate
    stats = Stats(agreement=over)
    assert stats.failed and not stats.findings
    text = summary(stats, 60.0)
    n = over.skipped
    assert f"frontends compared    {40 - n} of 40 examples compared, {n} skipped ({100 * n / 40:.1f}%" in text
    assert "FAILURE: check_frontends_agree skipped" in text
    assert not Stats(agreement=at_bound).failed


@pytest.mark.skipif(not torch_construct_available(), reason="construct.to_torch is not available")
def test_torch_side_is_checked_when_available():
    spec = {
        "input": {"kind": "seq", "shape": [1, 4, 6]},
        "layers": [
            {"op": "linear", "out": 8, "bias": True},
            {"op": "act", "fn": "relu"},
            {"op": "head", "out": 3},
        ],
        "seed": 0,
    }
    out = check_architecture(spec, removal_seed=2)
    assert out.zigs_removed > 0 and not out.skipped, out


@settings(max_examples=3, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=architectures(max_layers=4), removal_seed=removal_seeds())
def test_dynamo_exports_prune_exactly(spec, removal_seed):
    check_onnx(spec, removal_seed, exporter="dynamo")


def _around(layer: dict, kind: str = "seq") -> dict:
    """``layer`` between two stems, so that its input and output widths are prunable groups."""
    relu = {"op": "act", "fn": "relu"}
    if kind == "image":
        stem = {"op": "conv", "out": 6, "k": 3, "stride": 1, "groups": 1, "bias": True}
        last = {"op": "conv", "out": 3, "k": 1, "stride": 1, "groups": 1, "bias": True}
        image = {"kind": "image", "shape": [1, 3, 5, 5]}
        return {"input": image, "seed": 5, "layers": [stem, relu, layer, relu, last]}
    inp = {"kind": "seq", "shape": [1, 4, 5]}
    pre = [{"op": "first_token"}] if kind == "vec" else []
    stem = {"op": "linear", "out": 6, "bias": True}
    return {"input": inp, "seed": 5, "layers": [*pre, stem, relu, layer, relu, {"op": "head", "out": 3}]}


_WIDENED = {
    **{f"wlinear-{m}": _around({"op": "wlinear", "out": 7, "mode": m, "bias": m != "t"}, "vec")
       for m in ("t", "addmm", "wt", "wnorm", "scaled")},
    "wlinear-seq": _around({"op": "wlinear", "out": 7, "mode": "wnorm", "bias": False}),
    "wconv-wnorm": _around({"op": "wconv", "out": 7, "k": 3, "mode": "wnorm", "bias": True}, "image"),
    "wconv-scaled": _around({"op": "wconv", "out": 7, "k": 1, "mode": "scaled", "bias": False}, "image"),
    "pick-slice": _around({"op": "pick", "index": [1, 2, 3, 4]}, "image"),
    "pick-repeat": _around({"op": "pick", "index": [5, 0, 2, 2, 0]}),
    "pick-perm": _around({"op": "pick", "index": [3, 1, 0, 5, 4, 2]}, "vec"),
    "binop-max": _around({"op": "binop", "fn": "max",
                          "body": [{"op": "conv", "out": 6, "k": 1, "stride": 1, "groups": 1, "bias": True}]},
                         "image"),
    "binop-rsub": _around({"op": "binop", "fn": "rsub", "body": [{"op": "linear", "out": 6, "bias": True}]}),
}  # fmt: skip


@pytest.mark.parametrize("exporter", ["torchscript-preserve", "torchscript-fp16"])
@pytest.mark.parametrize("name", sorted(_WIDENED))
def test_widened_grammar_prunes_exactly(name, exporter):
    # What unseen models hold and the first grammar did not draw: weights stored transposed or computed
    # in the graph (a PRESERVE export keeps the arithmetic on the initializers), channels picked by
    # Slice or Gather (repeats too), binary joins other than + and *, and fp16 files. Each must
    # verify, and cut something where the engine can (a channel Gather pins its channels for now); the
    # fp16 export is fp16 (and verified at fp16's tolerance). Removal seed 4 cuts as much as allowed.
    spec = _WIDENED[name]
    if exporter.endswith("fp16"):
        model = onnx.load_from_string(export(build(spec), exporter))
        types = {t.data_type for t in model.graph.initializer if t.dims and len(t.dims) > 1}
        assert types == {onnx.TensorProto.FLOAT16}, types
    out = check_onnx(spec, removal_seed=4, exporter=exporter)
    gather = name in ("pick-perm", "pick-repeat")
    assert gather or (out.prunable_groups >= 1 and out.zigs_removed > 0), out


@contextlib.contextmanager
def _rule(op: str, zero_preserving: bool) -> Iterator[None]:
    """Replace an activation's declared f(0) for the duration of a test (the table is global)."""
    import dataclasses

    from graphcore.ops.registry import register_rule, rules

    old = rules()[("", op)]
    register_rule(dataclasses.replace(old, at_zero="zero" if zero_preserving else "nonzero"), replace=True)
    try:
        yield
    finally:
        register_rule(old, replace=True)


def test_the_fuzzer_catches_a_wrong_rule():
    # Mutation testing of the fuzzer itself: claim Sigmoid(0) = 0. Then a channel zeroed before a
    # sigmoid looks zero to a reduction over channels, and removing it changes the sum by 0.5 * ...
    found: list[str] = []

    @settings(max_examples=600, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(
        spec=architectures(kinds=("seq",), ops={"linear", "act", "chanstat"}, activations=("sigmoid",)),
        removal_seed=removal_seeds(),
    )
    def prop(spec, removal_seed):
        try:
            check_onnx(spec, removal_seed, second_round=False)
        except PropertyFailure as exc:
            found.append(str(exc))
            raise

    with _rule("Sigmoid", zero_preserving=True), pytest.raises(PropertyFailure, match="SOUNDNESS"):
        prop()
    assert found
    # And with the true rule the same search is clean.
    spec = {"input": {"kind": "seq", "shape": [1, 3, 4]},
            "layers": [{"op": "linear", "out": 8, "bias": True}, {"op": "act", "fn": "sigmoid"},
                       {"op": "chanstat", "kind": "sum"}, {"op": "linear", "out": 3, "bias": True}],
            "seed": 1}  # fmt: skip
    for removal_seed in range(3):
        check_onnx(spec, removal_seed, second_round=False)


def test_grammar_rejects_unknown_names():
    with pytest.raises(ValueError, match="not in the grammar"):
        architectures(ops={"conv", "frobnicate"}).example()
    assert {"conv", "attn", "tied_head"} <= ALL_OPS and "sigmoid" in ACTIVATIONS


def test_regression_tests_are_printed_ready_to_paste(tmp_path):
    spec = {"input": {"kind": "image", "shape": [1, 2, 4, 4]},
            "layers": [{"op": "conv", "out": 4, "k": 3, "stride": 1, "groups": 1, "bias": True},
                       {"op": "act", "fn": "relu"}, {"op": "gap"}, {"op": "head", "out": 2}],
            "seed": 3}  # fmt: skip
    text = regression_test("architecture", {"spec": spec, "removal_seed": 5, "exporter": "torchscript"},
                           "SOUNDNESS: the pruned model differs (rel 1e-2)", seed=7)  # fmt: skip
    scope: dict = {}
    exec(compile(text, "regression.py", "exec"), scope)
    tests = [v for k, v in scope.items() if k.startswith("test_fuzz_")]
    assert len(tests) == 1 and "--seed 7" in tests[0].__doc__
    tests[0]()  # the spec passes today, so the pasted test passes
    example = {"spec": spec, "exporter": "torchscript", "mutation": "truncate", "mutation_seed": 3}
    text = regression_test("malformed", example, "[truncate] analyze: crashed", seed=7)
    scope = {}
    exec(compile(text, "regression.py", "exec"), scope)
    test = next(v for k, v in scope.items() if k.startswith("test_fuzz_malformed"))
    test(tmp_path)
    assert signature("group 12 of 'a.weight'") == signature("group 3 of 'b.bias'")


def test_runner_counts_and_stays_in_budget():
    lines: list[str] = []
    t0 = time.monotonic()
    stats = run(0.15, seed=3, slow_exporters=False, cli_every=0, log=lines.append)
    assert stats.architectures > 0 and stats.malformed > 0 and stats.accepted + stats.rejected > 0
    assert stats.agreement.examples + stats.agreement.empty > 0  # the frontends check was counted
    assert time.monotonic() - t0 < 60
    # The run is timed, not derandomized: what it finds is for a person to read (the derandomized
    # properties above are what CI enforces); every finding must come with its regression test.
    assert all("def test_fuzz_" in f.test and f.test in "\n".join(lines) for f in stats.findings.values())


# -- malformed inputs ---------------------------------------------------------------------------------

_BASES = [
    {"input": {"kind": "image", "shape": [1, 3, 6, 6]},
     "layers": [{"op": "conv", "out": 8, "k": 3, "stride": 1, "groups": 1, "bias": True}, {"op": "bn"},
                {"op": "act", "fn": "relu"},
                {"op": "residual", "body": [{"op": "conv", "out": 8, "k": 3, "stride": 1, "groups": 2,
                                             "bias": True}]},
                {"op": "gap"}, {"op": "head", "out": 3}],
     "seed": 1},
    {"input": {"kind": "tokens", "vocab": 10, "seq": 4, "dim": 8},
     "layers": [{"op": "attn", "heads": 2, "kv_heads": 2, "head_dim": 3, "bias": True}, {"op": "ln"},
                {"op": "linear", "out": 12, "bias": True}, {"op": "act", "fn": "gelu"},
                {"op": "linear", "out": 8, "bias": True}, {"op": "tied_head", "vocab": 10}],
     "seed": 2},
    {"input": {"kind": "image", "shape": [1, 4, 4, 4]},
     "layers": [{"op": "split", "sizes": [2, 2], "chunk": True,
                 "branches": [[{"op": "conv", "out": 6, "k": 1, "stride": 1, "groups": 1, "bias": False}],
                              [{"op": "act", "fn": "sigmoid"}]]},
                {"op": "to_seq"}, {"op": "linear", "out": 5, "bias": True}],
     "seed": 3},
]  # fmt: skip
_BASE_BYTES: dict[int, bytes] = {}


def _base(i: int) -> bytes:
    if i not in _BASE_BYTES:
        _BASE_BYTES[i] = export(build(_BASES[i]), "torchscript")
    return _BASE_BYTES[i]


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """A hang is a failure, not a stuck CI job."""

    def on_alarm(signum, frame):
        raise _Timeout(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _cli(argv: list[str], out: Path) -> CliResult:
    so, se = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        warnings.simplefilter("ignore")
        with _deadline(60):
            rc = main(argv)
    return CliResult(rc, so.getvalue(), se.getvalue(), out.exists(), 0.0)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    base=st.integers(0, len(_BASES) - 1),
    mutation=st.sampled_from(sorted(MUTATORS)),
    seed=st.integers(0, 2**31 - 1),
)
def test_malformed_inputs_exit_2_with_one_line_or_verify(base, mutation, seed):
    data = mutate(_base(base), mutation, seed)
    with tempfile.TemporaryDirectory() as tmp:
        model, report, small = Path(tmp) / "m.onnx", Path(tmp) / "r.json", Path(tmp) / "s.onnx"
        model.write_bytes(data)
        verdicts = [judge_cli("analyze", _cli(["analyze", str(model), "--json", str(report)], report))]
        res = _cli(
            ["prune", str(model), "--sparsity", "0.5", "-o", str(small), "--report", str(report)], small
        )
        verdicts.append(judge_cli("prune", res))
        if res.rc == 0:  # a mutant that is still a valid model: prove the output independently
            removed = json.loads(report.read_text())["removed"]
            assert construct.verify(str(model), str(small), removed, samples=2).passed
    bad = [v.message for v in verdicts if not v.ok]
    assert not bad, (mutation, seed, bad)
    with _deadline(60):
        verdict = library_verdict(data, seed)
    assert verdict.ok, (mutation, seed, verdict.message)


@pytest.mark.parametrize(
    ("mutation", "seed"), [("truncate", 1), ("cycle", 4), ("absurd_dim", 2), ("wrong_dtype", 5)]
)
def test_malformed_inputs_through_the_real_command(mutation, seed, tmp_path):
    # Subprocesses, as a user runs it: exit codes, one stderr line, a memory limit and a timeout.
    data = mutate(_base(1), mutation, seed)
    verdicts = [library_verdict(data, seed), *check_cli(data, tmp_path)]
    bad = [v.message for v in verdicts if not v.ok]
    assert not bad, bad
    if mutation == "truncate":
        assert_contract(data, tmp_path, seed=seed)  # what a printed regression test calls


def test_mutations_are_reproducible():
    data = _base(0)
    for name in sorted(MUTATORS):
        assert mutate(data, name, 11) == mutate(data, name, 11), name
    assert mutate(data, "truncate", 1) != data
    onnx.ModelProto().ParseFromString(mutate(data, "unknown_op", 0))  # still a parseable model
    assert np.frombuffer(data, dtype=np.uint8).size > 0


# -- the recipes of docs/fuzzing.md -----------------------------------------------------------------


def _relu_to_contrib_gelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """Put an op of another domain (onnxruntime's com.microsoft::Gelu) where the exporter wrote Relu."""
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type, node.domain = "Gelu", "com.microsoft"
    model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return model


@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=architectures(activations=("relu",)), removal_seed=removal_seeds())
def test_a_custom_op_rule_is_fuzzed_through_a_rewrite(spec, removal_seed):
    from graphcore import register_op
    from graphcore.ops.common import identity

    def relate(ctx, node):
        identity(ctx, node.input(0), node.outputs[0], zero_preserving=True)

    register_op("Gelu", relate, domain="com.microsoft", at_zero="zero", replace=True)
    check_onnx(spec, removal_seed, rewrite=_relu_to_contrib_gelu)


@settings(max_examples=5, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    spec=architectures(kinds=("image", "seq"), ops={"conv", "linear", "bn", "act", "residual", "gap", "head"})
)
def test_an_optimizer_is_fuzzed_for_its_contract(spec):
    check_optimizer(
        spec, "dhspg", steps=8, lr=0.1, target_group_sparsity=0.5, start_pruning_steps=2, pruning_steps=4,
        pruning_periods=2,
    )  # fmt: skip
