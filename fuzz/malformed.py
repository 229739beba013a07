"""Malformed-input fuzzing: mutate valid ONNX models and hold the tool to its bad-input contract.

The contract (DESIGN.md, CLI): on any input, ``zigraph analyze`` and ``zigraph prune`` either succeed
(exit 0; a pruned model then verifies) or exit 2 with exactly one line on stderr starting with
``zigraph: error:`` — never a traceback, a hang, a crash, or an output file left behind.

Mutations are deterministic functions of ``(valid model bytes, mutation name, seed)``, so a failing
mutant is reproduced from three values. Two oracles judge a mutant:

* :func:`judge_cli` — the real command line, run in a subprocess (``python -m zigraph``) with a
  timeout and a memory limit, so a hang or an out-of-memory kill is seen as what it is;
* :func:`library_verdict` — the same pipeline called in-process through the packages (fast, and it
  names the exception a CLI run would only summarize). :class:`Worker` runs it in a separate process.

Library failures that the CLI would mask as ``could not process the input (KeyError: ...)`` are
reported too: an internal exception on bad input is a bug even when the exit code is right.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "MUTATORS",
    "CliResult",
    "Verdict",
    "Worker",
    "assert_contract",
    "check_cli",
    "has_nonfinite_weights",
    "judge_cli",
    "library_verdict",
    "mutate",
    "run_cli",
]

Mutator = Callable[[onnx.ModelProto, np.random.Generator], onnx.ModelProto | bytes | None]
MUTATORS: dict[str, Mutator] = {}
MEMORY_LIMIT = 6 * 2**30
"""Address-space limit for a judged process: an absurd dimension must fail cleanly, not exhaust RAM."""


def _mutator(fn: Mutator) -> Mutator:
    MUTATORS[fn.__name__.lstrip("_")] = fn
    return fn


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(0, len(seq)))] if len(seq) else None


# -- byte level --------------------------------------------------------------------------------------
def _bytes_of(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


@_mutator
def _truncate(m: onnx.ModelProto, rng: np.random.Generator) -> bytes:
    data = _bytes_of(m)
    return data[: int(rng.integers(0, len(data)))]


@_mutator
def _flip_bytes(m: onnx.ModelProto, rng: np.random.Generator) -> bytes:
    data = bytearray(_bytes_of(m))
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, len(data)))
        data[i] ^= int(rng.integers(1, 256))
    return bytes(data)


@_mutator
def _splice_random(m: onnx.ModelProto, rng: np.random.Generator) -> bytes:
    data = bytearray(_bytes_of(m))
    start = int(rng.integers(0, len(data)))
    n = int(rng.integers(1, 64))
    data[start : start + n] = rng.bytes(n)
    return bytes(data)


# -- graph structure ---------------------------------------------------------------------------------
@_mutator
def _drop_initializer(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    if not m.graph.initializer:
        return None
    del m.graph.initializer[int(rng.integers(0, len(m.graph.initializer)))]
    return m


@_mutator
def _dangling_input(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    nodes = [n for n in m.graph.node if n.input]
    n = _pick(rng, nodes)
    if n is None:
        return None
    n.input[int(rng.integers(0, len(n.input)))] = "fuzz_does_not_exist"
    return m


@_mutator
def _cycle(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    nodes = list(m.graph.node)
    if not nodes:
        return None
    i = int(rng.integers(0, len(nodes)))
    j = int(rng.integers(i, len(nodes)))
    if not nodes[i].input or not nodes[j].output:
        return None
    nodes[i].input[0] = nodes[j].output[0]  # j >= i: a node reads its own or a later output
    return m


@_mutator
def _unknown_op(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    """A custom-domain op on one edge: a *valid* model whose op the engine must not guess through."""
    nodes = [n for n in m.graph.node if n.input and n.input[0]]
    n = _pick(rng, nodes)
    if n is None:
        return None
    src = n.input[0]
    new = f"{src}__fuzz_mystery"
    idx = list(m.graph.node).index(n)
    m.graph.node.insert(idx, helper.make_node("Mystery", [src], [new], domain="fuzz.unknown", name="mystery"))
    n.input[0] = new
    m.opset_import.append(helper.make_opsetid("fuzz.unknown", 1))
    return m


@_mutator
def _unknown_standard_op(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    n = _pick(rng, list(m.graph.node))
    if n is None:
        return None
    n.op_type = "Frobnicate"
    return m


_SWAPS = ["Relu", "Sigmoid", "Exp", "Conv", "Gemm", "MatMul", "Add", "Concat", "Reshape", "Transpose",
          "Softmax", "LayerNormalization", "BatchNormalization", "Identity", "Split", "Slice",
          "Gather"]  # fmt: skip


@_mutator
def _op_swap(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    n = _pick(rng, [n for n in m.graph.node if n.op_type != "Constant"])
    if n is None:
        return None
    n.op_type = _pick(rng, _SWAPS)
    return m


@_mutator
def _drop_node(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    if not m.graph.node:
        return None
    del m.graph.node[int(rng.integers(0, len(m.graph.node)))]
    return m


@_mutator
def _bypass_node(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    """Remove a node and feed its consumers its first input: valid when shapes happen to agree."""
    nodes = [n for n in m.graph.node if n.input and n.input[0] and n.output]
    n = _pick(rng, nodes)
    if n is None:
        return None
    src, out = n.input[0], n.output[0]
    m.graph.node.remove(n)
    for other in m.graph.node:
        for k, name in enumerate(other.input):
            if name == out:
                other.input[k] = src
    for o in m.graph.output:
        if o.name == out:
            return None
    return m


@_mutator
def _duplicate_output(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    nodes = [n for n in m.graph.node if n.output]
    if len(nodes) < 2:
        return None
    a, b = rng.choice(len(nodes), size=2, replace=False)
    nodes[int(a)].output[0] = nodes[int(b)].output[0]
    return m


@_mutator
def _break_outputs(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    if rng.integers(0, 2):
        del m.graph.output[:]
    elif m.graph.output:
        m.graph.output[0].name = "fuzz_no_such_output"
    return m


@_mutator
def _empty_graph(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto:
    del m.graph.node[:]
    return m


@_mutator
def _name_collision(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    if not m.graph.initializer or not m.graph.input:
        return None
    _pick(rng, list(m.graph.initializer)).name = m.graph.input[0].name
    return m


# -- shapes and types --------------------------------------------------------------------------------
def _dims_of(vi: onnx.ValueInfoProto):
    return vi.type.tensor_type.shape.dim


@_mutator
def _break_init_shape(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    inits = [t for t in m.graph.initializer if len(t.dims)]
    t = _pick(rng, inits)
    if t is None:
        return None
    k = int(rng.integers(0, len(t.dims)))
    t.dims[k] = int(_pick(rng, [0, 1, t.dims[k] + 1, t.dims[k] * 2, 7]))
    return m


def _inline(m: onnx.ModelProto) -> list[TensorProto]:
    """Initializers whose data is in the file: a stacked mutation may already have pointed one at
    external data (possibly outside the folder), which a mutator must not try to read."""
    return [t for t in m.graph.initializer if t.data_location != TensorProto.EXTERNAL]


@_mutator
def _reshape_init(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    """A weight with consistent data but another layout: a *valid* file the graph cannot use."""
    inits = [t for t in _inline(m) if len(t.dims) >= 2]
    t = _pick(rng, inits)
    if t is None:
        return None
    arr = numpy_helper.to_array(t)
    arr = arr.reshape(arr.shape[::-1]) if rng.integers(0, 2) else arr.reshape(-1)
    t.CopyFrom(numpy_helper.from_array(arr, t.name))
    return m


@_mutator
def _break_input_shape(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    if not m.graph.input:
        return None
    vi = m.graph.input[0]
    dims = _dims_of(vi)
    choice = int(rng.integers(0, 4))
    if choice == 0 and len(dims):
        dims[int(rng.integers(0, len(dims)))].dim_value = int(_pick(rng, [0, 2, 3, 5, 1000]))
    elif choice == 1:
        dims.add().dim_value = 2  # one rank too many
    elif choice == 2 and len(dims):
        del dims[len(dims) - 1]
    else:
        vi.type.tensor_type.ClearField("shape")  # rank unknown
    return m


_ABSURD = [2**31, 2**40, 2**62, -1, -(2**40)]


@_mutator
def _absurd_dim(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    """2**40 where a size should be: in an input, a declared intermediate shape, a weight, a Reshape."""
    where = int(rng.integers(0, 4))
    big = int(_pick(rng, _ABSURD))
    if where == 0 and m.graph.input and len(_dims_of(m.graph.input[0])):
        dims = _dims_of(m.graph.input[0])
        dims[int(rng.integers(0, len(dims)))].dim_value = big
        return m
    if where == 1 and m.graph.node:
        n = _pick(rng, [n for n in m.graph.node if n.output])
        if n is not None:
            m.graph.value_info.append(
                helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, [1, big, 4, 4])
            )
            return m
    if where == 2 and m.graph.initializer:
        t = _pick(rng, list(m.graph.initializer))
        if len(t.dims):
            t.dims[0] = big
            return m
    for t in _inline(m):
        if t.data_type == TensorProto.INT64 and len(t.dims) == 1 and 2 <= t.dims[0] <= 6:
            arr = numpy_helper.to_array(t).copy()
            arr[int(rng.integers(0, arr.size))] = big
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
            return m
    if m.graph.input and len(_dims_of(m.graph.input[0])):
        _dims_of(m.graph.input[0])[0].dim_value = big
    return m


@_mutator
def _huge_rank(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    if not m.graph.input:
        return None
    dims = _dims_of(m.graph.input[0])
    for _ in range(int(rng.integers(20, 64))):
        dims.add().dim_value = 1
    return m


_DTYPES = [TensorProto.INT64, TensorProto.STRING, TensorProto.BOOL, TensorProto.DOUBLE, TensorProto.FLOAT16,
           TensorProto.UINT8, TensorProto.COMPLEX64, 0, 999]  # fmt: skip


@_mutator
def _wrong_dtype(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    dtype = int(_pick(rng, _DTYPES))
    if rng.integers(0, 2) and m.graph.input:
        m.graph.input[0].type.tensor_type.elem_type = dtype
    elif m.graph.initializer:
        _pick(rng, list(m.graph.initializer)).data_type = dtype
    else:
        return None
    return m


@_mutator
def _cast_weight(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    """A weight stored as float64 with matching data: a type error the checker must see."""
    inits = [t for t in _inline(m) if t.data_type == TensorProto.FLOAT]
    t = _pick(rng, inits)
    if t is None:
        return None
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    return m


@_mutator
def _special_values(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    """NaN, inf or exact zeros in a weight: a valid model; pruning must still verify or fail cleanly."""
    inits = [t for t in _inline(m) if t.data_type == TensorProto.FLOAT and len(t.dims)]
    t = _pick(rng, inits)
    if t is None:
        return None
    arr = numpy_helper.to_array(t).copy()
    flat = arr.reshape(-1)
    value = _pick(rng, [np.nan, np.inf, 0.0, 1e30])
    k = int(rng.integers(1, flat.size + 1))
    flat[rng.choice(flat.size, size=k, replace=False)] = value
    t.CopyFrom(numpy_helper.from_array(arr, t.name))
    return m


# -- attributes, versions, external data -------------------------------------------------------------
@_mutator
def _attribute_fuzz(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    nodes = [n for n in m.graph.node if n.attribute]
    n = _pick(rng, nodes)
    if n is None:
        return None
    att = _pick(rng, list(n.attribute))
    if rng.integers(0, 4) == 0:
        n.attribute.remove(att)
    elif att.type == onnx.AttributeProto.INT:
        att.i = int(_pick(rng, [-1, 0, 3, 7, 2**31, -(2**40)]))
    elif att.type == onnx.AttributeProto.INTS:
        if len(att.ints) and rng.integers(0, 2):
            att.ints[int(rng.integers(0, len(att.ints)))] = int(_pick(rng, [-5, 0, 9, 2**40]))
        else:
            att.ints.append(1)
    elif att.type == onnx.AttributeProto.FLOAT:
        att.f = float(_pick(rng, [np.nan, -1.0, 1e38]))
    else:
        att.name = "fuzz_unknown_attribute"
    return m


@_mutator
def _version_fuzz(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto:
    choice = int(rng.integers(0, 4))
    if choice == 0:
        del m.opset_import[:]
    elif choice == 1:
        m.opset_import[0].version = int(rng.integers(1, 40))
    elif choice == 2:
        m.ir_version = int(_pick(rng, [0, 1, 3, 99, -1]))
    else:
        m.opset_import.append(helper.make_opsetid("", 13))  # the default domain imported twice
    return m


@_mutator
def _external_data(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    t = _pick(rng, list(m.graph.initializer))
    if t is None:
        return None
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.ClearField("int64_data")
    t.data_location = TensorProto.EXTERNAL
    loc = _pick(rng, ["missing.bin", "/etc/passwd", "../outside.bin", "", "a/../../b.bin"])
    if loc:
        t.external_data.add(key="location", value=loc)
    if rng.integers(0, 2):
        t.external_data.add(key="length", value=str(_pick(rng, [2**40, -1, 4])))
    return m


@_mutator
def _value_info_lie(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | None:
    """A declared intermediate shape that contradicts what the ops compute."""
    n = _pick(rng, [n for n in m.graph.node if n.output])
    if n is None:
        return None
    rank = int(rng.integers(1, 5))
    shape = [int(rng.integers(1, 9)) for _ in range(rank)]
    m.graph.value_info.append(helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, shape))
    return m


def _stack_of(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto | bytes | None:
    names = [k for k in MUTATORS if k != "stack"]
    cur: onnx.ModelProto | bytes = m
    for _ in range(int(rng.integers(2, 4))):
        if isinstance(cur, bytes):
            break
        before = cur.SerializeToString()
        try:
            res = MUTATORS[_pick(rng, names)](cur, rng)
        except (ValueError, TypeError, IndexError):  # a mutation that reads a tensor an earlier one broke
            cur = onnx.ModelProto()
            cur.ParseFromString(before)
            continue
        if res is not None:
            cur = res
    return cur


MUTATORS["stack"] = _stack_of


def mutate(data: bytes, name: str, seed: int) -> bytes:
    """Mutant ``seed`` of kind ``name`` of the valid model ``data`` (the same triple, the same bytes)."""
    rng = np.random.default_rng(seed)
    model = onnx.ModelProto()
    model.ParseFromString(data)
    try:
        res = MUTATORS[name](model, rng)
    except (ValueError, TypeError, IndexError):  # cannot apply to this model: keep it valid
        return data
    if res is None:
        return data  # the mutation does not apply: the valid model itself
    return res if isinstance(res, bytes) else res.SerializeToString()


# -- judging -----------------------------------------------------------------------------------------
@dataclass
class Verdict:
    """``ok``: the contract held (``accepted``: the model was valid and everything verified)."""

    ok: bool
    accepted: bool
    message: str


def _limit_memory() -> None:
    with contextlib.suppress(ValueError, OSError):  # a platform without the limit
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@dataclass
class CliResult:
    rc: int | None
    stdout: str
    stderr: str
    output_written: bool
    seconds: float


def run_cli(args: list[str], out: Path | None = None, timeout: float = 120.0) -> CliResult:
    """Run ``python -m zigraph ARGS`` in a subprocess with a timeout and a memory limit."""
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            [sys.executable, "-m", "zigraph", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_limit_memory,
            cwd=os.getcwd(),
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        rc, so, se = res.returncode, res.stdout, res.stderr
    except subprocess.TimeoutExpired as exc:
        rc = None
        so = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        se = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    return CliResult(rc, so, se, bool(out and out.exists()), time.perf_counter() - t0)


def has_nonfinite_weights(data: bytes) -> bool:
    """Whether a float weight holds NaN or inf. Then zeroing is not removal (0 * inf is nan, where the
    removed channel contributes nothing), so a failed verification is the truth, not a bug."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
        tensors = [*model.graph.initializer]
        tensors += [
            a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
        ]
        for t in tensors:
            floating = t.data_type in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
            if floating and not np.isfinite(numpy_helper.to_array(t)).all():
                return True
    except Exception:  # unreadable: not a model whose verification could run
        return False
    return False


def judge_cli(command: str, res: CliResult, nonfinite: bool = False) -> Verdict:
    """The bad-input contract for one CLI run (``command`` is ``analyze`` or ``prune``).

    ``nonfinite``: the model has NaN or inf weights, where verification may rightly fail (exit 1).
    """
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if res.rc is None:
        return Verdict(False, False, f"{command}: hung (killed after {res.seconds:.0f} s)")
    if res.rc == 0:
        if command == "prune" and not res.output_written:
            return Verdict(False, True, "prune: exit 0 but no output file")
        if command == "prune" and "PASSED" not in res.stdout:
            return Verdict(False, True, "prune: exit 0 without a PASSED verification")
        return Verdict(True, True, "accepted")
    if res.rc == 2:
        if len(lines) != 1 or not lines[0].startswith("zigraph: error:"):
            return Verdict(False, False, f"{command}: exit 2 but stderr is not one error line: {lines[:3]}")
        if res.output_written:
            return Verdict(False, False, f"{command}: exit 2 but the output file was written ({lines[0]})")
        if "could not process the input (" in lines[0] or "internal error" in lines[0]:
            return Verdict(False, False, f"{command}: an internal exception reached the user: {lines[0]}")
        if "the pruned model" in lines[0]:  # the input ran; what zigraph made of it does not
            return Verdict(False, True, f"{command}: the pruned model is broken: {lines[0]}")
        return Verdict(True, False, lines[0])
    if res.rc == 1 and "Traceback" not in res.stderr and "FAILED" in res.stdout and nonfinite:
        return Verdict(True, True, "verification failed on non-finite weights (0 * inf is nan)")
    if res.rc == 1 and "Traceback" not in res.stderr and "FAILED" in res.stdout:
        return Verdict(
            False, True, f"SOUNDNESS: {command} verification failed on a valid model: {res.stdout[-300:]}"
        )
    tail = " | ".join(lines[-3:])
    return Verdict(False, False, f"{command}: crashed with exit {res.rc}: {tail[:500]}")


_BAD_AT_VERIFY = ("cannot load", "pruned model", "same outputs", "changed shape")
"""Errors at verification that blame the pruned model (the full one already loaded): bugs."""


def check_cli(data: bytes, workdir: Path, timeout: float = 120.0) -> list[Verdict]:
    """``zigraph analyze --json`` and ``zigraph prune -o`` on the mutant, each judged by the contract."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "mutant.onnx"
    model.write_bytes(data)
    report, small = workdir / "report.json", workdir / "small.onnx"
    for f in (report, small):
        f.unlink(missing_ok=True)
    res = run_cli(["analyze", str(model), "--json", str(report)], report, timeout)
    verdicts = [judge_cli("analyze", res)]
    res = run_cli(["prune", str(model), "--sparsity", "0.5", "-o", str(small)], small, timeout)
    verdicts.append(judge_cli("prune", res, nonfinite=has_nonfinite_weights(data)))
    return verdicts


def assert_contract(data: bytes, workdir: Path, seed: int = 0, cli: bool = True) -> None:
    """The whole bad-input contract on one mutant (what a printed regression test calls)."""
    verdicts = [library_verdict(data, seed)]
    if cli:
        verdicts += check_cli(data, workdir)
    bad = [v.message for v in verdicts if not v.ok]
    assert not bad, "; ".join(bad)


def library_verdict(data: bytes, seed: int = 0) -> Verdict:
    """What ``zigraph prune`` does, through the packages: load, analyze, select, cut, save, verify.

    A ``ZigraphError`` anywhere is a clean rejection, except an "internal error" or a small model that
    onnxruntime cannot load while the full one loads: those are bugs. Any other exception is a bug.
    """
    import construct
    import frontends
    import graphcore
    from construct.onnx_construct import zero_slices
    from construct.verify import _session, compare_models
    from graphcore.errors import ZigraphError
    from graphcore.select import relative_scores, select_zigs

    stage = "load"
    with tempfile.TemporaryDirectory(prefix="zigraph-fuzz-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        try:
            graph = frontends.load(str(path))
            stage = "analyze"
            analysis = graphcore.analyze(graph)
            analysis.report().model_dump_json()
            stage = "select"
            norms = construct.zig_norms(analysis)
            chosen = select_zigs(analysis, 0.5, relative_scores(analysis, norms), seed=seed)
            stage = "prune"
            small, plan = construct.prune_onnx(analysis, chosen)
            construct.save_onnx(small, Path(tmp) / "small.onnx")
            stage = "verify"
            full = zero_slices(graph.meta["model"], graph.meta.get("base_dir"), plan.removed)
            try:
                _session(full)
            except ZigraphError as exc:
                return Verdict(True, False, f"onnxruntime cannot run the input: {exc}")
            rep = compare_models(full, small, samples=2)
        except ZigraphError as exc:
            msg = str(exc)
            if "internal error" in msg or (stage == "verify" and any(w in msg for w in _BAD_AT_VERIFY)):
                return Verdict(False, False, f"{stage}: {msg}")
            if "\n" in msg.strip():
                return Verdict(False, False, f"{stage}: a multi-line error message: {msg[:300]!r}")
            return Verdict(True, False, f"{stage}: {msg}")
        except MemoryError:
            return Verdict(False, False, f"{stage}: MemoryError (an absurd size was not rejected up front)")
        except RecursionError:
            return Verdict(False, False, f"{stage}: RecursionError")
        except Exception as exc:
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(tb.filename).name}:{tb.lineno}"
            return Verdict(False, False, f"{stage}: {type(exc).__name__} at {where}: {str(exc)[:300]}")
        if not rep.passed and has_nonfinite_weights(data):
            return Verdict(True, True, "verification failed on non-finite weights (0 * inf is nan)")
        if not rep.passed:
            return Verdict(
                False, True, f"SOUNDNESS: pruned model differs from the zeroed one (rel {rep.max_rel:.3e})"
            )
        return Verdict(True, True, f"accepted, removed {len(chosen)} ZIGs")


def _serve(conn) -> None:  # pragma: no cover - runs in the worker process
    _limit_memory()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # onnxruntime logs every failing mutant's run to stderr; verdicts carry the facts
    import warnings

    import onnxruntime

    warnings.simplefilter("ignore")
    onnxruntime.set_default_logger_severity(4)  # a mutant that fails at run time is expected here
    while True:
        try:
            item = conn.recv()
        except EOFError:
            return
        if item is None:
            return
        data, seed = item
        conn.send(library_verdict(data, seed))


class Worker:
    """A separate process that runs :func:`library_verdict`: a hang, a crash or an out-of-memory kill
    of one mutant is observed from outside, and the worker is restarted."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._ctx = mp.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.conn, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def judge(self, data: bytes, seed: int = 0) -> Verdict:
        try:
            self.conn.send((data, seed))
            if self.conn.poll(self.timeout):
                return self.conn.recv()
            verdict = Verdict(False, False, f"hung (no answer within {self.timeout:.0f} s)")
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.proc.join(5)
            verdict = Verdict(False, False, f"the process died (exit code {self.proc.exitcode})")
        self._restart()
        return verdict

    def _restart(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self._start()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
