"""Lower a shrink plan onto an ONNX model: slice initializers, rewrite shape constants, keep the rest.

Names, opset, metadata, graph inputs and outputs are preserved. A constant that feeds a rewritten shape
is cloned for that use only, so sharing between layers never leaks one layer's new width into another.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from construct.external_write import DataWriter, LazyArrays, inline_array, read_external
from construct.onnx_renorm import lower_counts
from construct.quant_zero import Fill, _quantized_reads, fill_slice, quant_fills, real_values
from frontends.onnx_sources import ParamUse, param_uses, stored_tensors
from graphcore import select
from graphcore.errors import InternalError, ZigraphError
from graphcore.groups import ParamSlice, PruneAnalysis
from graphcore.ir import Graph, Node
from graphcore.ops import legacy_attr_at
from graphcore.shrink import ShrinkPlan, plan

__all__ = ["apply_shrink", "finish", "prune_onnx", "save_onnx", "tensor_array", "zero_slices", "zig_norms"]


def tensor_array(t: onnx.TensorProto, base_dir: Path | None) -> np.ndarray:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        if base_dir is None:
            raise ZigraphError(f"tensor '{t.name}' uses external data but the model folder is unknown")
        return read_external(t, base_dir)  # memory-mapped: pages are read as they are touched
    return inline_array(t)


def _param_arrays(graph: Graph, names: set[str] | None = None) -> dict[str, np.ndarray]:
    """Weights by name (initializers, Constant-node weights and the aliases of shared ones, which read
    their weight's array), read only when asked for."""
    model: onnx.ModelProto = graph.meta["model"]
    base = graph.meta.get("base_dir")
    aliases: dict[str, ParamUse] = graph.meta.get("param_aliases", {})
    wanted = None if names is None else set(names) | {aliases[n].source for n in names if n in aliases}
    out: dict[str, np.ndarray] = {}
    for t in model.graph.initializer:
        if wanted is None or t.name in wanted:
            out[t.name] = tensor_array(t, base)
    const_params = graph.meta.get("constant_params", {})
    if const_params:
        for pn in model.graph.node:
            hit = pn.output and pn.output[0] in const_params and (wanted is None or pn.output[0] in wanted)
            if pn.op_type == "Constant" and hit:
                for att in pn.attribute:
                    if att.name == "value":
                        out[pn.output[0]] = tensor_array(att.t, base)
    for alias, use in aliases.items():
        if (names is None or alias in names) and use.source in out:
            out[alias] = out[use.source]
    if names is not None:
        out = {k: v for k, v in out.items() if k in names}
    return out


def zig_norms(analysis: PruneAnalysis, arrays: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """L2 norm of every ZIG (``graphcore.select.zig_norms``) over ``arrays``, by default the ONNX
    model's trainable initializers, read only for the parameters the analysis names."""
    if arrays is None:
        names = {name for name, _ in analysis.param_axes if analysis.trainable.get(name)}
        model, base = analysis.graph.meta["model"], analysis.graph.meta.get("base_dir")
        if any(True for _ in _quantized_reads(model, stored_tensors(model))):
            arrays = real_values(model, base, _param_arrays(analysis.graph, names))
        else:  # one weight in memory at a time, read when the norm reaches it
            arrays = LazyArrays(lambda n: _param_arrays(analysis.graph, {n})[n], sorted(names))
    return select.zig_norms(analysis, arrays)


def _store(t: onnx.TensorProto, arr: np.ndarray, sink: DataWriter | None) -> None:
    """New values for ``t``: in the proto, or streamed to the output's data file when there is one."""
    if sink is None:
        _set_tensor(t, arr)
    else:
        sink.put(t, arr)


def _set_tensor(t: onnx.TensorProto, arr: np.ndarray) -> None:
    new = numpy_helper.from_array(
        arr.astype(helper.tensor_dtype_to_np_dtype(t.data_type), copy=False), t.name
    )
    t.CopyFrom(new)


def _model_copy(graph: Graph) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(graph.meta["model"])
    return model


def _tensors_by_name(model: onnx.ModelProto, aliases: bool = False) -> dict[str, onnx.TensorProto]:
    """The model's stored tensors by name (initializers, Constant values); with ``aliases``, each alias
    of a shared weight (``frontends.onnx_sources.param_uses``) names its weight's tensor too."""
    out = stored_tensors(model)
    if aliases:
        for alias, use in param_uses(model).items():
            if use.source in out:
                out[alias] = out[use.source]
    return out


def _reads_of(model: onnx.ModelProto, aliases: Mapping[str, ParamUse]) -> dict[str, list[tuple[int, int]]]:
    """Use name (a weight or an alias) -> the (node, operand) positions in ``model`` that read it."""
    at = {(u.node, u.index): a for a, u in aliases.items()}
    wanted = {u.source for u in aliases.values()}
    out: dict[str, list[tuple[int, int]]] = {}
    for idx, pn in enumerate(model.graph.node):
        for i, x in enumerate(pn.input):
            name = at.get((idx, i)) or (x if x in wanted else None)
            if name is not None:
                out.setdefault(name, []).append((idx, i))
    return out


def _add_initializer(model: onnx.ModelProto, t: onnx.TensorProto) -> None:
    """A new stored tensor; IR version 3 also lists it among the graph inputs."""
    model.graph.initializer.append(t)
    if model.ir_version < 4:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))


def _write_uses(
    model: onnx.ModelProto,
    source: str,
    t: onnx.TensorProto,
    uses: list[str],
    slicing: Callable[[str], tuple],
    array_for: Callable[[tuple, list[str]], np.ndarray],
    reads: Mapping[str, list[tuple[int, int]]],
    sink: DataWriter | None = None,
) -> None:
    """Store a weight's new values once per distinct slicing of its uses (a tied embedding and LM head
    that keep the same slices stay one tensor).

    ``slicing(use)``: a hashable description of what the use changes (empty: the stored values, as
    they are); ``array_for(slicing, uses)``: the new array of that group. The group holding the weight's
    own name (or, when no group may change it in place, none) keeps the stored tensor; every other
    group gets a tensor of its own, named after its first use, and its reads are pointed there. The
    weight itself stays unchanged while any group needs its stored values or it is a graph output.
    """
    by_slicing: dict[tuple, list[str]] = {}
    for use in uses:
        by_slicing.setdefault(slicing(use), []).append(use)
    groups = [(names, array_for(key, names) if key else None) for key, names in by_slicing.items()]
    keep_stored = any(arr is None for _, arr in groups) or source in {o.name for o in model.graph.output}
    for names, arr in groups:
        if arr is None:
            owner = source
        elif not keep_stored and source in names:
            _store(t, arr, sink)
            owner = source
        else:
            owner = next(n for n in names if n != source) if any(n != source for n in names) else names[0]
            if owner == source:
                owner = _fresh_name(model, source)
            new = onnx.TensorProto(name=owner, data_type=t.data_type, dims=arr.shape)
            _store(new, arr, sink)
            _add_initializer(model, new)
        for n in names:
            for idx, i in reads.get(n, []):
                model.graph.node[idx].input[i] = owner


def _fresh_name(model: onnx.ModelProto, stem: str) -> str:
    taken = {t.name for t in model.graph.initializer} | {x for pn in model.graph.node for x in pn.output}
    k = 1
    while f"{stem}__zigraph_w{k}" in taken:
        k += 1
    return f"{stem}__zigraph_w{k}"


def _uses_by_source(names, aliases: Mapping[str, ParamUse]) -> dict[str, list[str]]:
    """Group use names by the weight they read: the weight first, then all its aliases in order."""
    of_source: dict[str, list[str]] = {}
    for a, u in aliases.items():
        of_source.setdefault(u.source, []).append(a)
    out: dict[str, list[str]] = {}
    for n in names:
        src = aliases[n].source if n in aliases else n
        if src not in out:
            out[src] = [src, *of_source.get(src, [])]
    return out


def _load_all(model: onnx.ModelProto, names: set[str], base: Path | None) -> None:
    for name, t in _tensors_by_name(model).items():
        if name in names and t.data_location == onnx.TensorProto.EXTERNAL:
            _set_tensor(t, tensor_array(t, base))


def zero_slices(
    source: onnx.ModelProto, base: Path | None, removed: list[ParamSlice], sink: DataWriter | None = None
) -> onnx.ModelProto:
    """The original model with exactly the removed slices set to zero (for verification).

    A slice may name an alias of a shared weight (``frontends.onnx_sources.param_uses``, found again
    from the model alone): the reads of that alias get a zeroed copy of their own, so the weight's other
    readers keep their values — one copy per distinct set of slices. With ``sink`` every weight goes
    to that data file, one at a time, instead of into the returned proto.
    """
    model = onnx.ModelProto()
    model.CopyFrom(source)
    tensors = _tensors_by_name(model)
    fills = quant_fills(model, base)  # a quantized weight's zero is its zero point
    aliases = param_uses(model)
    by_param: dict[str, list[ParamSlice]] = {}
    for s in removed:
        by_param.setdefault(s.param, []).append(s)
    reads = _reads_of(model, aliases) if any(n in aliases for n in by_param) else {}
    for src, uses in _uses_by_source(by_param, aliases).items():
        t = tensors.get(src)
        if t is None:
            raise ZigraphError(f"removed slice names '{src}', which is not a tensor of the model")
        stored = tensor_array(t, base)
        fill = fills.get(src)
        _write_uses(
            model,
            src,
            t,
            uses,
            lambda n: tuple(sorted((s.axis, tuple(sorted(s.indices))) for s in by_param.get(n, []))),
            lambda _, names: _zeroed(stored, by_param[names[0]], names[0], fill),  # noqa: B023 (called at once)
            reads,
            sink,
        )
    if sink is None:
        _internalize(model, base)
    else:
        sink.rest(model, base)
    return model


def _zeroed(stored: np.ndarray, slices: list[ParamSlice], name: str, fill: Fill = None) -> np.ndarray:
    """A copy of ``stored`` with ``slices`` set to zero (``fill``: a quantized weight's zero point)."""
    arr = stored.copy()
    for s in slices:
        if not 0 <= s.axis < arr.ndim or (s.indices and max(s.indices) >= arr.shape[s.axis]):
            raise ZigraphError(
                f"removed slice of '{name}' (axis {s.axis}) does not fit its shape {arr.shape}"
            )
        fill_slice(arr, s.axis, list(s.indices), fill)  # writes into arr
    return arr


def _internalize(model: onnx.ModelProto, base: Path | None) -> None:
    for t in _tensors_by_name(model).values():
        if t.data_location == onnx.TensorProto.EXTERNAL:
            _set_tensor(t, tensor_array(t, base))


def prune_onnx(
    analysis: PruneAnalysis, removed_zigs, sink: DataWriter | None = None
) -> tuple[onnx.ModelProto, ShrinkPlan]:
    """Build the smaller ONNX model for ``removed_zigs``; the input model is never modified. With
    ``sink`` (``construct.external_write``) the weights are streamed to that data file one at a time
    and the returned proto holds none: the model may be far past protobuf's 2 GB."""
    graph = analysis.graph
    if graph.format != "onnx" or "model" not in graph.meta:
        raise ZigraphError("prune_onnx needs an analysis of an ONNX model (frontends.load('model.onnx'))")
    p = plan(analysis, removed_zigs)
    model = _model_copy(graph)
    apply_shrink(model, graph, p, graph.meta.get("base_dir"), sink=sink)
    finish(model, graph.meta["model"], "pruned")
    return model, p


def apply_shrink(
    model: onnx.ModelProto,
    graph: Graph,
    p: ShrinkPlan,
    base: Path | None,
    skip: Collection[str] = frozenset(),
    sink: DataWriter | None = None,
) -> None:
    """Write shrink plan ``p`` into ``model`` (a copy of the model ``graph`` was loaded from, same node
    order): slice the weights, rewrite shape operands and width attributes, load external data.

    ``skip``: IR node names that are about to be deleted whole (erasing); they and the weights only
    they read are left alone. Pruning and erasing share this, so a Concat consumer loses the channels of
    an erased branch exactly as it loses pruned channels.
    """
    tensors = _tensors_by_name(model)
    aliases: dict[str, ParamUse] = graph.meta.get("param_aliases", {})
    reads = _reads_of(model, aliases) if aliases else {}
    for src, uses in _uses_by_source(p.param_keep, aliases).items():
        live = [n for n in uses if not (skip and _only_read_by(graph, n, skip))]
        if not any(n in p.param_keep for n in live):
            continue
        t = tensors[src]
        stored = tensor_array(t, base)
        _write_uses(
            model,
            src,
            t,
            live,
            lambda use: tuple((axis, tuple(keep.tolist())) for axis, keep in p.param_keep.get(use, [])),
            lambda key, _: _kept(stored, key),  # noqa: B023 (called at once)
            reads,
            sink,
        )
    if sink is None:
        _internalize(model, base)
    else:
        sink.rest(model, base)

    nodes_by_name = {}
    for n in graph.nodes:
        nodes_by_name[n.name] = model.graph.node[n.origin]
    used = {t.name for t in model.graph.initializer} | {o for pn in model.graph.node for o in pn.output}
    counter = [0]

    def fresh(stem: str) -> str:
        while True:
            counter[0] += 1
            name = f"{stem}__zigraph{counter[0]}"
            if name not in used:
                used.add(name)
                return name

    # Literals rewritten per use: clone the constant for that node input.
    per_use: dict[tuple[str, str, int], dict[int, int]] = {}
    for (const, flat, use_node, use_idx), new in p.literal_rewrites.items():
        if use_node not in skip:
            per_use.setdefault((const, use_node, use_idx), {})[flat] = new
    for (const, use_node, use_idx), changes in per_use.items():
        base_arr = graph.values[const].const
        if base_arr is None:
            raise ZigraphError(f"internal error: constant '{const}' has no value to rewrite")
        arr = np.array(base_arr, copy=True)
        flat = arr.reshape(-1)
        for i, v in changes.items():
            flat[i] = v
        name = fresh(const)
        _add_initializer(model, numpy_helper.from_array(flat.reshape(arr.shape), name))
        nodes_by_name[use_node].input[use_idx] = name
    for (node_name, idx), arr in p.operand_rewrites.items():
        if node_name in skip:
            continue
        pn = nodes_by_name[node_name]
        name = fresh(pn.input[idx] or node_name)
        _add_initializer(model, numpy_helper.from_array(arr.astype(np.int64), name))
        pn.input[idx] = name
    ir_nodes = {n.name: n for n in graph.nodes}
    for node_name, upd in p.node_updates.items():
        if node_name in skip:
            continue
        pn = nodes_by_name[node_name]
        attrs, inputs = _in_original_form(ir_nodes[node_name], upd, graph.opset)
        drop = set(upd.get("drop_attrs", [])) | set(attrs)
        keep_attrs = [a for a in pn.attribute if a.name not in drop]
        del pn.attribute[:]
        pn.attribute.extend(keep_attrs)
        for k, v in attrs.items():
            pn.attribute.append(helper.make_attribute(k, v))
        for idx, arr in inputs.items():
            name = fresh(f"{node_name}_in{idx}")
            _add_initializer(model, numpy_helper.from_array(np.asarray(arr, dtype=np.int64), name))
            while len(pn.input) <= idx:
                pn.input.append("")
            pn.input[idx] = name
    lower_counts(model, graph, p, skip)  # statistics keep their original count (docs/hidden_size.md)


def _kept(stored: np.ndarray, key: tuple) -> np.ndarray:
    arr = stored
    for axis, keep in key:
        arr = np.take(arr, list(keep), axis=axis)
    return np.ascontiguousarray(arr)


def _only_read_by(graph: Graph, name: str, nodes: Collection[str]) -> bool:
    v = graph.values.get(name)
    return v is not None and bool(v.consumers) and all(c.name in nodes for c, _ in v.consumers)


def finish(model: onnx.ModelProto, original: onnx.ModelProto, what: str) -> None:
    """Drop the initializers nothing reads any more, keep the graph inputs true to the initializers
    (IR < 4 lists every initializer as a graph input too, the new ones included), recompute
    ``value_info`` with strict shape inference and run ``onnx.checker``: the written file must be valid
    for its IR version. ``what`` names the result (``pruned``, ``erased``) in the error; a model we
    built that does not check is our bug (``InternalError``), never the user's input."""
    _drop_unused_initializers(model)
    if model.ir_version < 4:
        _declare_initializers_as_inputs(model)
    _sync_initializer_inputs(model)
    del model.graph.value_info[:]
    from frontends.onnx_frontend import checkable

    probe = checkable(model)  # without the weight bytes; ops only onnxruntime knows kept out of the way
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, check_type=True, strict_mode=True, data_prop=True)
        model.graph.value_info.extend(inferred.graph.value_info)
    except Exception as exc:
        _check_declared_outputs(original)  # the input's own lie, visible only once folded
        raise InternalError(f"the {what} model fails shape inference ({_first_line(exc)})") from None
    try:
        onnx.checker.check_model(probe)
    except Exception as exc:
        raise InternalError(f"the {what} model is not a valid ONNX model ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _declare_initializers_as_inputs(model: onnx.ModelProto) -> None:
    """IR version 3 requires every initializer to be a graph input as well; construct adds initializers
    (sliced shape operands, per-use clones), which must be declared there too."""
    declared = {i.name for i in model.graph.input}
    for t in model.graph.initializer:
        if t.name not in declared:
            model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            declared.add(t.name)


def _in_original_form(node: Node, upd: dict, opset: int | None) -> tuple[dict, dict]:
    """Split a node update into attributes and operands as the model's opset spells them: rules read
    operands only, and an older opset spells some of them as attributes (Slice-1 ``starts``, Split-2
    ``split``)."""
    attrs = dict(upd.get("attrs", {}))
    inputs = {}
    for idx, arr in upd.get("inputs", {}).items():
        name = legacy_attr_at(node, idx, opset)
        if name is None:
            inputs[idx] = arr
        else:
            attrs[name] = [int(x) for x in np.asarray(arr).reshape(-1)]
    return attrs, inputs


def _check_declared_outputs(model: onnx.ModelProto) -> None:
    """Raise a bad-input error when the original model computes other output shapes than it declares.

    Shape inference cannot see through a shape computed at run time, so such a model loads; pruning
    writes those shapes as constants and inference then reports the contradiction on the small model.
    """
    from construct.verify import _session, random_inputs

    try:
        session = _session(model)
        got = session.run(None, random_inputs(model, np.random.default_rng(0)))
    except Exception:
        return
    for out, arr in zip(model.graph.output, got):
        dims = out.type.tensor_type.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        actual = list(np.shape(arr))
        if len(dims) and (
            len(declared) != len(actual) or any(d not in (None, a) for d, a in zip(declared, actual))
        ):
            raise ZigraphError(
                f"output '{out.name}' is declared with shape {declared} but the model computes {actual}"
            )


def _sync_initializer_inputs(model: onnx.ModelProto) -> None:
    """IR version 3 models list every initializer as a graph input too: keep those declarations true."""
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in dims and inp.type.HasField("tensor_type"):
            shape = inp.type.tensor_type.shape
            del shape.dim[:]
            for d in dims[inp.name]:
                shape.dim.add().dim_value = d


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for pn in model.graph.node for i in pn.input} | {o.name for o in model.graph.output}
    used |= _subgraph_inputs(model.graph)
    keep = [t for t in model.graph.initializer if t.name in used]
    if len(keep) != len(model.graph.initializer):
        dropped = {t.name for t in model.graph.initializer} - {t.name for t in keep}
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        inputs = [i for i in model.graph.input if i.name not in dropped]  # IR v3 lists them as inputs
        del model.graph.input[:]
        model.graph.input.extend(inputs)


def _subgraph_inputs(g: onnx.GraphProto) -> set[str]:
    out: set[str] = set()
    for pn in g.node:
        for att in pn.attribute:
            subs = [att.g] if att.type == onnx.AttributeProto.GRAPH else list(att.graphs)
            for sg in subs:
                out |= {i for n in sg.node for i in n.input}
                out |= _subgraph_inputs(sg)
    return out


def save_onnx(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    external: bool | None = None,
    data_name: str | None = None,
) -> None:
    """Write atomically: a private folder beside ``path``, then renames (``construct.external_write``).

    With ``external`` (by default: when the proto would pass protobuf's 2 GB) the weights go to a data
    file of ours, ``data_name`` or ``<name>.data`` beside ``path``, and ``model`` is left pointing at it.
    """
    from construct.external_write import StagedOutput, write_proto

    if external is None:
        external = model.ByteSize() > 1_900_000_000
    with StagedOutput(path, data_name=data_name) as staged:
        if external:
            writer = staged.writer()
            try:
                writer.rest(model, None)
                writer.seal(model)
            finally:
                writer.abort()
        write_proto(model, staged.model)
        staged.publish()
