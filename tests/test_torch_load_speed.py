"""The fast torch loading path builds exactly the IR, the trace record and the report of the plain one.

``load_torch`` reads most shapes from cheap rules (``frontends.torch_shapes``) instead of running every
node on meta tensors, and builds the IR without copying the environment per node. Soundness rests on
those shortcuts changing nothing: for torchvision models and small custom modules, the shapes recorded,
the IR (every node, value, constant and construct record) and the analysis report are compared,
within one run, against the plain path (every node run through its meta kernel).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import frontends.torch_shapes as shapes
import frontends.torch_trace as tr
import graphcore
from frontends.torch_frontend import load_torch


def _canon(x: Any) -> Any:
    """A JSON-able, order-stable rendering of IR attributes and records."""
    if isinstance(x, np.ndarray):
        return ["nd", x.dtype.name, list(x.shape), x.tobytes().hex()]
    if isinstance(x, np.generic):
        return _canon(x.item())
    if isinstance(x, dict):
        return sorted(([_canon(k), _canon(v)] for k, v in x.items()), key=repr)
    if isinstance(x, list | tuple):
        return [type(x).__name__, *(_canon(v) for v in x)]
    if isinstance(x, bool | int | float | str | type(None)):
        return x
    return _stable(x)


def _stable(x: Any) -> str:
    """``repr`` without memory addresses (they differ between processes)."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(x))


def fingerprint(graph: Any) -> dict[str, Any]:
    """Everything a torch IR carries that analysis or construct reads, rendered canonically."""
    tm = graph.meta["torch"]
    values = [
        [v.name, _canon(v.shape), v.dtype, v.is_param, v.trainable, _canon(v.const), v.alias_of]
        for v in graph.values.values()
    ]
    nodes = [
        [n.name, n.op, n.domain, n.origin, [None if v is None else v.name for v in n.inputs],
         [v.name for v in n.outputs], _canon(n.attrs)]
        for n in graph.nodes
    ]  # fmt: skip
    record = {
        "tracer": tm.tracer,
        "shape_source": tm.shape_source,
        "sites": _canon(tm.sites),
        "operand_sites": _canon(tm.operand_sites),
        "attr_sites": _canon(tm.attr_sites),
        "splits": _canon(tm.splits),
        "fixups": _canon(tm.fixups),
        "aliases": _canon(tm.aliases),
        "tensor_kind": _canon(tm.tensor_kind),
    }
    meta = {k: _canon(v) for k, v in graph.meta.items() if k != "torch"}
    return {
        "values": values,
        "nodes": nodes,
        "inputs": [v.name for v in graph.inputs],
        "outputs": [v.name for v in graph.outputs],
        "record": record,
        "meta": meta,
        "fx": [
            [n.name, n.op, _stable(n.target), _stable(n.args), _stable(n.kwargs)] for n in tm.gm.graph.nodes
        ],
    }


def digest(module: nn.Module, example: Any) -> tuple[str, str]:
    """(hash of the IR fingerprint, hash of the analysis report) for ``load_torch(module, example)``."""
    graph = load_torch(module, example)
    ir = json.dumps(fingerprint(graph), sort_keys=True, default=repr)
    report = graphcore.analyze(graph).report().model_dump_json()
    return hashlib.sha256(ir.encode()).hexdigest(), hashlib.sha256(report.encode()).hexdigest()


def _recorded(module: nn.Module, example: tuple, fast: bool, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """(node name → shape, strides and dtype of each result; node name → recorded description) of one
    meta run, fast (rules, tensors swapped as read) or plain. Strides too: a rule's result must be
    laid out as the kernel's, or a later ``view`` could succeed where torch fails. The run is called
    directly: a failing fast run raises here instead of falling back to the plain one."""
    seen: dict[str, Any] = {}
    plain = tr.describe
    recorder_run_node = tr._Recorder.run_node

    def layout(obj: Any) -> Any:
        if isinstance(obj, shapes.Abstract):  # the tensor it stands for, as a kernel would get it
            obj = obj.tensor
        if isinstance(obj, torch.Tensor):
            return (tuple(obj.shape), obj.stride(), str(obj.dtype))
        if isinstance(obj, list | tuple):
            return [layout(x) for x in obj]
        return plain(obj)

    def spy(self: Any, n: Any) -> Any:
        out = recorder_run_node(self, n)
        seen[n.name] = layout(out)
        return out

    gm = torch.fx.symbolic_trace(module)
    monkeypatch.setattr(tr._Recorder, "run_node", spy)
    try:
        meta = tr._run_meta(gm, example, fast=fast)
    finally:
        monkeypatch.undo()
    assert len(seen) == len(gm.graph.nodes) == len(meta)
    return seen, {n.name: m for n, m in meta.items()}


class Rules(nn.Module):
    """Every rule of ``frontends.torch_shapes`` on its plain case, next to cases it must leave alone."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 6, 3, padding="same", dilation=2)
        self.c2 = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
        self.c2v = nn.Conv2d(8, 8, (3, 1), padding="valid", bias=False)
        self.c3 = nn.Conv3d(2, 3, 2, stride=(1, 2, 1))
        self.reflect = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.bn1 = nn.BatchNorm1d(6)
        self.bn2 = nn.BatchNorm2d(8)
        self.bn_batch = nn.BatchNorm2d(8, track_running_stats=False)
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm([4, 8])
        self.ln_c = nn.LayerNorm(4)  # on a permuted (non-contiguous) input, as ConvNeXt's blocks
        self.pools = nn.ModuleList([nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d((None, 3))])
        self.pools2d = nn.ModuleList([
            nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d(2, dilation=(2, 1), ceil_mode=True),
            nn.MaxPool2d((3, 2), stride=(2, 3), padding=(1, 0), ceil_mode=True), nn.AvgPool2d(2, stride=2),
            nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
            nn.AvgPool2d((1, 3), stride=[1], divisor_override=2), nn.MaxPool2d(2, return_indices=True),
            nn.MaxPool2d(2, stride=5, padding=1, ceil_mode=True),  # the last window starts in the padding
            nn.AvgPool2d(3, stride=4, padding=1, ceil_mode=True),
        ])  # fmt: skip
        self.flat = nn.ModuleList([nn.Flatten(), nn.Flatten(0, 2), nn.Flatten(-2, -1), nn.Flatten(1, 1)])
        self.lin = nn.Linear(8, 5)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.mha_seq = nn.MultiheadAttention(8, 2, kdim=6, vdim=4)
        acts = [nn.ReLU(), nn.GELU(), nn.SiLU(), nn.Hardswish(), nn.LeakyReLU(0.1), nn.ReLU6()]
        self.acts = nn.ModuleList([*acts, nn.Sigmoid(), nn.Tanh(), nn.Identity(), nn.Dropout(0.3)])

    def forward(self, a, b, c, t):
        y1 = self.bn1(self.c1(a))  # (2, 6, 9)
        y2 = self.c2(b)  # (2, 8, 4, 4)
        y2 = self.bn2(y2) + self.bn_batch(y2)
        y2 = self.gn(self.c2v(y2)) + 1.5
        y2 = self.reflect(y2)
        for act in self.acts:
            y2 = act(y2)
        y3 = self.c3(c)
        tok = self.ln(t)  # (2, 4, 8)
        att, _ = self.mha(tok, tok, tok, need_weights=False)
        att2, w = self.mha(tok, tok, tok)  # weights wanted: the module runs
        seq = tok.transpose(0, 1).contiguous()
        kv = torch.zeros(4, 2, 6)
        att3, _ = self.mha_seq(seq, kv, kv[..., :4].contiguous(), need_weights=False)
        z = torch.cat([att, att2, att3.transpose(0, 1)], dim=-1)
        z = torch.cat((z, z.transpose(1, 2).transpose(1, 2)), -2)  # a non-contiguous operand
        s = self.lin(att) * 2 - self.lin(tok) / 3  # on a transposed result, then a contiguous one
        s = s.sum(1, keepdim=True) + s + torch.ones(5) + (y1[:, :1, :5] * 2)[:, :, :1].transpose(1, 2)
        ints = torch.arange(5) + 1
        tt = t.transpose(1, 2)  # (2, 8, 4), not contiguous
        ln = self.ln_c(tt) + F.layer_norm(tt, (4,), self.ln_c.weight, bias=self.ln_c.bias, eps=1e-6)
        ln = ln + F.layer_norm(y2.permute(0, 2, 3, 1), [4, 8]).sum()  # no affine, two axes
        pooled = [p(y2) for p in self.pools]
        pooled += [p(y2) for p in self.pools2d] + [p(b) for p in self.pools2d]  # (2, 8, 4, 4), (2, 4, 8, 8)
        pooled += [F.relu(y2), F.relu(y2 * 2, inplace=True), F.relu(y2, False), F.relu(ints)]
        pooled += [f(y2) for f in self.flat] + [f(tt) for f in self.flat[:3]]  # tt: not contiguous
        pooled += [torch.flatten(y2, 1), torch.flatten(y2), torch.flatten(y2, start_dim=-3, end_dim=2)]
        pooled += [torch.flatten(c, 2, 3), torch.flatten(y2, 2, 1 + 1), y2.flatten(1)]
        pooled += [F.adaptive_avg_pool2d(y2, (2, 1)), F.adaptive_avg_pool2d(y2, 2)]
        pooled.append(F.adaptive_avg_pool2d(y2.transpose(2, 3), [1, None]))  # not contiguous: the kernel
        return y2, y3, z, s, ints, w, ln, pooled


def _rules_inputs() -> tuple:
    torch.manual_seed(0)
    return (torch.randn(2, 4, 9), torch.randn(2, 4, 8, 8), torch.randn(1, 2, 4, 6, 3), torch.randn(2, 4, 8))


def test_rules_record_what_the_meta_kernels_record(monkeypatch):
    # a fresh module per trace: symbolic_trace stores tensor constants on the module it traces
    # (``_tensor_constant0``, ...), so a second trace of the same module names them differently
    fast = _recorded(Rules().eval(), _rules_inputs(), True, monkeypatch)
    plain = _recorded(Rules().eval(), _rules_inputs(), False, monkeypatch)
    assert fast[0] == plain[0]
    assert fast[1] == plain[1]


def test_a_failing_fast_run_falls_back_to_the_plain_one(monkeypatch):
    def broken(*args: Any) -> Any:
        raise RuntimeError("a rule that breaks")

    plain = tr.trace(Rules().eval(), _rules_inputs())
    monkeypatch.setitem(shapes.FUNCTION_RULES, torch.cat, broken)
    res = tr.trace(Rules().eval(), _rules_inputs())
    assert res.shape_source == plain.shape_source == "meta"
    assert {n.name: m for n, m in res.meta.items()} == {n.name: m for n, m in plain.meta.items()}


def test_a_rule_that_cannot_answer_leaves_the_error_to_the_kernel(monkeypatch):
    """Channel mismatches, wrong ranks and empty outputs are not guessed at: torch's own failure (and the
    fallback that follows it) is the same with and without the rules."""

    class Broken(nn.Module):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind = kind
            self.bn = nn.BatchNorm2d(3)
            self.lin = nn.Linear(7, 2)
            self.conv = nn.Conv2d(3, 3, 5)

        def forward(self, x):
            if self.kind == "bn":
                return self.bn(x[:, :2])
            if self.kind == "lin":
                return self.lin(x)
            return self.conv(x[..., :2, :2])

    for kind in ("bn", "lin", "conv"):
        errors = []
        for fast in (True, False):
            monkeypatch.setattr(tr, "FAST_SHAPES", fast)
            try:
                load_torch(Broken(kind).eval(), torch.randn(1, 3, 4, 4), allow_export=False)
            except Exception as exc:  # the message names torch's blocker
                errors.append(str(exc))
            else:
                errors.append("loaded")
        assert errors[0] == errors[1] != "loaded", errors


def test_the_module_keeps_its_tensors(monkeypatch):
    """Only the tensors the meta run reads are swapped, and every one is put back (also on failure)."""
    model = Rules().eval()
    before = {k: v for k, v in [*model.named_parameters(), *model.named_buffers()]}
    load_torch(model, _rules_inputs())
    consts = {k: v for k, v in vars(model).items() if isinstance(v, torch.Tensor)}  # stored by the trace
    monkeypatch.setattr(tr, "_Recorder", _FailingRecorder)
    with pytest.raises(Exception):  # noqa: B017  (whatever the tracer reports)
        tr._record_meta(torch.fx.symbolic_trace(model), _rules_inputs())
    with pytest.raises(Exception):  # noqa: B017  (the graph over the module itself, as loading runs it)
        tr._record_meta(model, _rules_inputs(), tr.symbolic_trace(model))
    after = {k: v for k, v in [*model.named_parameters(), *model.named_buffers()]}
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] and after[k].device.type == "cpu" for k in before)
    assert consts and all(vars(model)[k] is t and t.device.type == "cpu" for k, t in consts.items())


class _FailingRecorder(tr._Recorder):
    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if getattr(target, "__name__", "") == "cat":
            raise RuntimeError("stop half-way")
        return super().call_function(target, args, kwargs)


def _model(name: str) -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    if name == "rules":
        return Rules().eval(), _rules_inputs()
    tv = pytest.importorskip("torchvision").models
    if name == "tiny_vit":
        m = tv.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                                 mlp_dim=64, num_classes=10)  # fmt: skip
    else:
        m = getattr(tv, name)()
    return m.eval(), (torch.randn(1, 3, 32, 32),)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "mobilenet_v3_small", "tiny_vit", "rules"])
def test_ir_and_report_match_the_plain_path(name, monkeypatch):
    model, example = _model(name)
    tr._run_meta(torch.fx.symbolic_trace(model), example, fast=True)  # the fast run itself succeeds
    fast = digest(*_model(name))
    monkeypatch.setattr(tr, "FAST_SHAPES", False)
    plain = digest(*_model(name))
    assert fast == plain, name


class _Args(nn.Module):
    """Every kind of argument ``_Tracer.create_arg`` answers itself or leaves to torch: proxies in
    tuples, lists and dicts, plain scalars, a parameter and a buffer read directly, a tensor constant,
    a named tuple, a dtype, a slice and a non-str dict key."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4))
        self.register_buffer("b", torch.ones(4))
        self.const = torch.arange(4.0)
        self.lin = nn.Linear(4, 4)
        self.mixedCase = nn.ReLU()  # a target whose node name is snake-cased

    def forward(self, x):
        y = torch.cat([x, x * 2.0], dim=-1)[..., :4] + self.w * self.b + self.const
        y = torch.stack((y, self.mixedCase(self.lin(y))), 0).sum(0).to(torch.float32)
        y = torch.add(y, torch.cat((y, y), 0)[:1], alpha=2)  # a torch function with keyword arguments
        size = torch.Size([1, 4])
        y = y.reshape(size) + torch.nn.functional.pad(x, [0, 0], mode="constant", value=None or 0.0)
        y = y + torch.zeros(4).add(1)
        return {"y": y, "pair": (y, [x, None, True, "s"]), 3: x}


def _fx_program(gm: torch.fx.GraphModule, model: nn.Module) -> tuple:
    """What a traced program is: its nodes, its code, and where in ``model`` each tensor and
    submodule it holds comes from (a path, as two models' objects differ)."""
    where = {id(t): k for k, t in vars(model).items() if isinstance(t, torch.Tensor)}
    for named in (model.named_modules, model.named_parameters, model.named_buffers):
        where.update({id(t): k for k, t in named(remove_duplicate=False)})  # type: ignore[operator]
    nodes = [
        (n.name, n.op, _stable(n.target), _stable(n.args), _stable(n.kwargs), _stable(n.type),
         _stable(n.meta.get("nn_module_stack")), [u.name for u in n.users],
         [u.name for u in n.all_input_nodes], type(n.args).__name__, type(n.kwargs).__name__)
        for n in gm.graph.nodes
    ]  # fmt: skip
    held = [*gm.named_parameters(), *gm.named_buffers()]
    tensors = [(k, type(t).__name__, where.get(id(t))) for k, t in held]
    owners = [k.rpartition(".") for k, _ in gm.named_buffers()]
    persistent = [
        name not in gm.get_submodule(owner)._non_persistent_buffers_set for owner, _, name in owners
    ]
    modules = [(k, where.get(id(m))) for k, m in gm.named_modules()]
    return nodes, gm.code, tensors, persistent, modules, type(gm).__name__


@pytest.mark.parametrize("name", ["args", "rules", "resnet18", "densenet121", "tiny_vit"])
def test_the_tracer_records_what_torch_fx_records(name):
    """``frontends.torch_trace.symbolic_trace`` skips torch's type questions only where they all answer
    no, and its ``GraphModule`` is made only when asked for (``graph_module``): node for node (targets,
    arguments, types, module stacks), in its code and in the objects it holds it is fx's own program."""
    model = _Args().eval() if name == "args" else _model(name)[0]  # rules: one module called twice
    theirs = _fx_program(torch.fx.symbolic_trace(model), model)
    model = _Args().eval() if name == "args" else _model(name)[0]  # a fresh one: constants are stored on it
    graph = tr.symbolic_trace(model)
    model.train()  # made later, under another flag: the GraphModule keeps the one the trace ran under
    ours = tr.graph_module(model, graph, type(model).__name__)
    assert _fx_program(ours, model) == theirs
    assert ours.training is False and model.training


def test_only_plain_arguments_skip_the_symbolic_check():
    """``_Tracer.create_node`` hands torch a node's arguments after making it (skipping the walk that
    warns about raw ``SymInt`` values) only where every leaf is of a type that cannot be symbolic."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    plain = ((x, [1, 2.0, None, "s", slice(0, x, None)]), {"dim": -1, "dtype": torch.float32, "k": (True,)})
    assert tr._no_symbolic(*plain)
    assert not tr._no_symbolic((x, torch.zeros(1)), {})
    assert not tr._no_symbolic((x,), {"size": [2, object()]})


def test_module_tensor_reads_what_getattr_reads():
    """``frontends.torch_shapes.module_tensor`` skips Python's failing lookup only where it would end
    in ``nn.Module.__getattr__``: a parametrized weight (a class property), a plain attribute, a
    ``None`` bias and a module that changes ``__getattr__`` read as ``getattr`` reads them."""
    from torch.nn.utils import parametrize

    from frontends.torch_shapes import module_tensor

    class Doubled(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * 2

    class Aliased(nn.Linear):
        def __getattr__(self, name: str) -> Any:
            return super().__getattr__("bias" if name == "weight_alias" else name)

    lin = nn.Linear(3, 2, bias=False)
    parametrize.register_parametrization(lin, "weight", Doubled())
    bn = nn.BatchNorm2d(4)
    bn.scale = torch.ones(1)  # a plain attribute in the instance dict
    for mod in (lin, bn, nn.Conv2d(2, 2, 1), nn.Sequential(nn.ReLU()), Aliased(2, 2)):
        names = ("weight", "bias", "running_mean", "num_batches_tracked", "scale", "0", "weight_alias", "x")
        for attr in names:
            want = getattr(mod, attr, None)
            got = module_tensor(mod, attr)
            assert got is want or (isinstance(want, torch.Tensor) and torch.equal(got, want)), (mod, attr)


class _InPlace(nn.Module):
    """A rule's result reshaped in place by a method (its kernel runs), then read by rules again."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv1d(4, 6, 3)
        self.lin = nn.Linear(7, 3)

    def forward(self, a: torch.Tensor) -> Any:
        y = self.c(a)  # a rule: (2, 6, 7)
        pair = (y, y * 2)
        y.unsqueeze_(0)  # the kernel, in place: y is (1, 2, 6, 7) from here on
        z = F.relu(self.c(a), inplace=True)  # the rule's result under a second node
        z.transpose_(1, 2)  # its kernel: no longer contiguous, (2, 7, 6)
        w = self.c(a)
        ys = (self.lin(y) + 1, F.relu(y), torch.cat([y, y], 1), pair[0].flatten(1), torch.flatten(pair[0], 2))
        return ys, F.relu(z) + w.transpose(1, 2), torch.flatten(z, 1)


def test_rules_see_a_tensor_changed_in_place(monkeypatch):
    """Once a kernel ran on a rule's result, rules read that tensor (its shape may have changed in
    place), not the ``Abstract`` it was made from."""
    example = (torch.randn(2, 4, 9),)
    fast = _recorded(_InPlace().eval(), example, True, monkeypatch)
    plain = _recorded(_InPlace().eval(), example, False, monkeypatch)
    assert fast == plain
    assert fast[1]["lin"] == tr.TensorMeta((1, 2, 6, 3), "float32")


def test_kernels_get_each_abstract_as_one_tensor_in_the_containers_fx_made():
    """``_concrete`` hands a kernel the one tensor of every ``Abstract`` and keeps fx's own container
    types (an ``immutable_dict`` argument stays immutable, as the plain run passes it)."""
    a = shapes.Abstract((2, 3), torch.float32)
    imm = torch.fx.immutable_collections
    frozen = imm.immutable_dict({"x": a, "n": None})
    args = (a, imm.immutable_list([a, 1]), frozen, {"y": [a]}, slice(None, 2))
    out = tr._concrete(args)
    assert [type(x) for x in out[1:]] == [type(x) for x in args[1:]]
    assert out[0] is a.tensor and out[1][0] is a.tensor
    assert out[2]["x"] is a.tensor and out[3]["y"][0] is a.tensor
    assert a.tensor.device.type == "meta" and tuple(a.tensor.shape) == (2, 3)
    assert out[4] == args[4]
