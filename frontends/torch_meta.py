"""The contract between the torch frontend and construct's torch lowering.

The frontend records, while it maps the FX graph to IR, where every size it read sits in the FX
program; construct (``construct/torch_construct.py``) reads the same record to write a shrink plan
back into a copy of that program. Both sides import these two types from here and nothing else of
each other, so either side's internals can change freely. A torch graph carries its record as
``graph.meta["torch"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.fx as fx

__all__ = ["LitSite", "TorchMeta"]


@dataclass(frozen=True)
class LitSite:
    """Where one integer literal sits in an FX node.

    ``path``: ``("args", i)``, ``("args", i, k)`` (element k of a list or index-tuple argument),
    ``("kwargs", name)``, ``("kwargs", name, k)``, ``("module", attr)`` / ``("module", attr, k)`` for an
    attribute of the leaf module the node calls; a trailing ``"start"``/``"end"`` addresses a bound of
    a ``slice`` object.
    """

    node: str
    path: tuple
    value: int


@dataclass
class TorchMeta:
    """Everything construct needs to lower a shrink plan of this IR back onto the FX graph.

    ``sites``: per flat index of a ``lit::`` constant, the FX literal it came from (for the plan's
    ``literal_rewrites``). ``operand_sites``: per element of operand ``(IR node, input index)``, the FX
    literal it came from or None for a size read at run time (for ``operand_rewrites`` and the Slice
    bounds of ``node_updates``). ``attr_sites``: ``(IR node, attribute)`` → ``(FX node, path)`` of an
    attribute the plan updates (Conv ``group``, GroupNorm ``num_groups``). ``splits``: IR Split node →
    the FX node it came from (split/chunk are rewritten to explicit sizes). ``fixups``: FX-level
    rewrites the plan does not cover (``(kind, fx node, data)``: ``mha``, ``sdpa_scale``). ``aliases``:
    FQN of a tied parameter → the FQN it appears under in the IR. ``tensor_kind``: FQN → ``parameter``,
    ``buffer`` or ``constant``.

    ``traced``: the traced module as the tracer left it; read it as ``gm``. The frontend traces into a
    ``GraphModule`` whose Python code is generated on first use (torch's ``_LazyGraphModule``: that
    code generation was a third of the trace time, and analysis never runs the module); ``gm`` turns
    it into a plain ``GraphModule`` once, over the same FX graph and the same submodules and tensors.
    """

    traced: fx.GraphModule
    tracer: str
    shape_source: str
    sites: dict[str, list[LitSite | None]] = field(default_factory=dict)
    operand_sites: dict[tuple[str, int], list[LitSite | None]] = field(default_factory=dict)
    attr_sites: dict[tuple[str, str], tuple[str, tuple]] = field(default_factory=dict)
    splits: dict[str, dict] = field(default_factory=dict)
    fixups: list[tuple[str, str, dict]] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    tensor_kind: dict[str, str] = field(default_factory=dict)

    @property
    def gm(self) -> fx.GraphModule:
        """The traced program as a plain ``fx.GraphModule`` (its code generated now if it was deferred)."""
        if _is_lazy(self.traced):
            # copies every target from the lazy module (the objects it holds since the trace, tensors
            # that are not parameters as buffers of the same persistence) and generates the code once
            self.traced = fx.GraphModule(self.traced, self.traced.graph, type(self.traced).__name__)
        return self.traced


def _is_lazy(gm: fx.GraphModule) -> bool:
    try:
        from torch.fx._lazy_graph_module import _LazyGraphModule
    except ImportError:  # a torch without deferred code generation never makes one
        return False
    return isinstance(gm, _LazyGraphModule)
