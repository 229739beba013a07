"""DEV ONLY stand-in for graphcore.erase until the lead's lands (not committed)."""

from dataclasses import dataclass

import numpy as np

import graphcore
from graphcore.errors import AnalysisError
from graphcore.groups import ParamSlice

JOINTS = {"Add", "Sum", "Concat"}


def analysis_or_stub(graph):
    try:
        import graphcore.erase
    except ImportError:
        return StubErase(graph)
    return graphcore.analyze(graph, mode="erase")


@dataclass
class Structure:
    id: int
    segment: list
    params: list
    erasable: bool = True
    reason: str | None = None


@dataclass
class ErasePlan:
    erased: list
    removed_nodes: list
    bypass: dict
    drop_inputs: dict
    removed_zigs: np.ndarray
    removed_params: list
    removed: list


def _data(v):
    return v is not None and not v.is_param and v.const is None


class StubErase:
    mode = "erase"

    def __init__(self, graph):
        self.graph = graph
        self.prune = graphcore.analyze(graph)
        self.structures = []
        self._cuts = []
        for n in graph.nodes:
            ins = [v for v in n.inputs if _data(v)]
            if n.op not in JOINTS or len(ins) < 2:
                continue
            for v in ins:
                seg = self._dies({(n.name, v.name)})
                params = self._params(seg)
                if params:
                    self.structures.append(
                        Structure(
                            len(self.structures), [x.name for x in graph.nodes if x.name in seg], params
                        )
                    )
                    self._cuts.append((n.name, v.name))

    def _params(self, seg):
        out = []
        for n in self.graph.nodes:
            if n.name in seg:
                for v in n.inputs:
                    if (
                        v is not None
                        and v.is_param
                        and v.trainable
                        and (v.rank or 0) > 0
                        and v.name not in out
                        and all(c.name in seg for c, _ in v.consumers)
                    ):
                        out.append(v.name)
        return out

    def _dies(self, cuts, extra=()):
        """Nodes that die when the joint inputs ``cuts`` (joint, value) are cut (backward)."""
        dead = set(extra)
        cut_vals = {}
        for j, v in cuts:
            cut_vals.setdefault(v, set()).add(j)
        outs = {v.name for v in self.graph.outputs}
        changed = True
        while changed:
            changed = False
            for n in reversed(self.graph.nodes):
                if n.name in dead or not n.outputs:
                    continue
                ok = True
                for v in n.outputs:
                    if v.name in outs or not v.consumers:
                        ok = False
                        break
                    for c, _ in v.consumers:
                        if c.name not in dead and c.name not in cut_vals.get(v.name, ()):
                            ok = False
                            break
                    if not ok:
                        break
                if ok:
                    dead.add(n.name)
                    changed = True
        return dead

    def valid(self, erased):
        try:
            self.plan(erased)
            return True
        except AnalysisError:
            return False

    def select(self, order, k):
        out = []
        for i in order:
            if len(out) < k and self.valid([*out, i]):
                out.append(i)
        return out

    def plan(self, erased):
        g = self.graph
        gone = set()
        for i in erased:
            gone |= set(self.structures[i].segment)
        dead_vals = set()
        for n in g.nodes:
            if n.name in gone:
                dead_vals |= {v.name for v in n.outputs}
        bypass, drop = {}, {}
        removed = set(gone)
        for n in g.nodes:
            if n.name in gone:
                continue
            ins = [(i, v) for i, v in enumerate(n.inputs) if _data(v)]
            dead = [i for i, v in ins if v.name in dead_vals]
            if not dead:
                continue
            live = [i for i, v in ins if v.name not in dead_vals]
            if n.op in JOINTS and live:
                if len(live) == 1:
                    bypass[n.name] = n.inputs[live[0]].name
                else:
                    drop[n.name] = dead
                continue
            removed.add(n.name)
            dead_vals |= {v.name for v in n.outputs}
        outs = {v.name for v in g.outputs}
        if outs & dead_vals:
            raise AnalysisError("invalid")
        cuts = set()
        for j, v in bypass.items():
            node = next(n for n in g.nodes if n.name == j)
            cuts |= {(j, u.name) for u in node.inputs if _data(u) and u.name != v}
        removed = self._dies(
            cuts
            | {
                (j, node.inputs[i].name)
                for j, ps in drop.items()
                for i in ps
                for node in [next(n for n in g.nodes if n.name == j)]
            },
            removed,
        )
        zigs = []
        internal = self.prune.internal
        for j in list(bypass) + list(drop):
            node = next(n for n in g.nodes if n.name == j)
            if node.op != "Concat":
                continue
            axis = node.attrs["axis"] % len(node.outputs[0].shape)
            for v in node.inputs:
                if _data(v) and v.name in dead_vals:
                    key = (v.name, axis)
                    o = internal.ctx.offset[key]
                    z = internal.zig_of_comp[internal.labels[o : o + internal.ctx.size[key]]]
                    zigs.extend(int(x) for x in z if x >= 0)
        zigs = np.unique(np.asarray(zigs, dtype=np.int64))
        gone_all = removed | set(bypass)
        rparams = [
            v.name for v in g.params if v.consumers and all(c.name in gone_all for c, _ in v.consumers)
        ]
        rem = [ParamSlice(p, 0, tuple(range(g.values[p].shape[0]))) for p in rparams if g.values[p].shape]
        rem += [s for s in self.prune.slices(zigs.tolist()) if s.param not in rparams]
        order = [n.name for n in g.nodes if n.name in removed]
        return ErasePlan(list(erased), order, bypass, drop, zigs, rparams, rem)
