"""Handlers for torch functions, Tensor methods and ``torch.nn`` leaf modules (the ``symbolic_trace`` path).

Importing this package registers every handler with ``frontends.torch_lower``, one module per op family
as ``graphcore.ops`` declares the rules: ``elementwise``, ``stems``, ``normalize``, ``shapes``,
``layout``, ``indexing`` and ``attention`` (``common`` holds what they share). Every handler reads its
FX node's arguments, emits IR nodes with ONNX op names and conventions, and returns the IR value(s) of
the node's result. A handler raises ``Unsupported`` for a variant it cannot express exactly; the node
then becomes an unknown op (which blocks its neighbours) — never a guess.
"""

from frontends.torch_ops import attention, elementwise, indexing, layout, normalize, shapes, stems

__all__ = ["FAMILIES"]

FAMILIES = (elementwise, stems, normalize, shapes, layout, indexing, attention)
"""The handler modules, one per op family; importing this package has registered all of them."""
