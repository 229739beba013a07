"""The contract between the torch frontend and construct's torch lowering.

The frontend records, while it maps the FX graph to IR, where every size it read sits in the FX
program; construct (``construct/torch_construct.py``) reads the same record to write a shrink plan
back into a copy of that program. Both sides import these two types from here and nothing else of
each other, so either side's internals can change freely. A torch graph carries its record as
``graph.meta["torch"]``.
"""

from __future__ import annotations

from collections.abc import Callable
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

    ``traced``: the traced program, or a function that makes it; read it as ``gm``. Loading never makes
    the ``GraphModule`` of an ``fx.symbolic_trace`` graph (copying the module tree into it cost a tenth
    of DenseNet-121's load, generating its Python code more, and analysis never runs the module):
    ``gm`` makes it on first use, over the FX graph and the submodules and tensors of the traced
    module, and keeps it.
    """

    traced: fx.GraphModule | Callable[[], fx.GraphModule]
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
        """The traced program as an ``fx.GraphModule`` (made now if loading deferred it)."""
        if not isinstance(self.traced, fx.GraphModule):
            self.traced = self.traced()
        return self.traced
