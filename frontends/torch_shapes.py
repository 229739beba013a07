"""Output shapes of the commonest torch modules and functions, read without running their meta kernels.

Why: shape propagation runs the FX graph once on ``meta`` tensors (``frontends.torch_trace``), and for
several everyday ops the meta kernel is a Python decomposition that costs milliseconds per call: an
eval-mode ``BatchNorm2d`` goes through ``native_batch_norm_helper`` and a dozen elementwise reference
ops (1.4 ms), ``LayerNorm`` 5 ms, ``nn.MultiheadAttention`` 10 ms, ``Linear`` 2 ms, ``GELU`` 3 ms. On
ResNet-50, ViT-B/16 and DenseNet-121 that was most of the torch loading time. Each of these ops has a
closed-form output (same shape as the input, or one axis replaced), so a rule here builds the empty
meta result directly.

Soundness: a rule answers only when the call is the plain, unambiguous case it knows — an exact module
type (a subclass may override ``forward``), no forward hooks, the argument pattern the rule reads, equal
dtypes (no promotion to reason about), sizes that agree with the module's parameters — and returns
``None`` otherwise, in which case the op runs through its meta kernel as before. Any input the real op
would reject (wrong rank, channel mismatch, an empty convolution output) also falls back, so the
kernel's own error is what the user sees. ``tests/test_torch_load_speed.py`` checks, on torchvision models
and custom modules, that every recorded shape and the IR are identical with and without the rules.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.nn.modules.module as module_hooks
from torch import nn

__all__ = ["Abstract", "function_rule", "module_rule", "module_tensor"]

Rule = Callable[[Any, tuple, dict], Any]
MODULE_RULES: dict[type, Rule] = {}
FUNCTION_RULES: dict[Any, Rule] = {}

_META = torch.device("meta")


class Abstract:
    """A contiguous meta tensor not made yet: its shape and dtype, and the tensor once a kernel needs it.

    What a rule returns. Most results only ever meet other rules, which read shapes and dtypes, so
    the meta run (``frontends.torch_trace``) records them without calling ``torch.empty`` (7 µs) and
    materializes one (``tensor``, the same tensor on every call) only for an op that runs its kernel:
    the kernel then sees what it saw when rules returned fresh empty tensors. An ``Abstract`` never
    leaves the meta run and answers the few tensor questions rules ask (``shape``, ``dtype``,
    ``dim()``, ``is_contiguous()``, ``is_floating_point()``, ``numel()``) as that tensor would; once
    the tensor is made, from the tensor itself (a kernel may have changed it in place: ``unsqueeze_``).
    """

    __slots__ = ("_dtype", "_shape", "_tensor")

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self._shape = shape
        self._dtype = dtype
        self._tensor: torch.Tensor | None = None

    @property
    def shape(self) -> Sequence[int]:
        return self._shape if self._tensor is None else self._tensor.shape

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype if self._tensor is None else self._tensor.dtype

    def dim(self) -> int:
        return len(self.shape)

    def is_contiguous(self) -> bool:
        return self._tensor is None or self._tensor.is_contiguous()

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def made(self) -> torch.Tensor | None:
        """The tensor if ``tensor`` made it."""
        return self._tensor

    @property
    def tensor(self) -> torch.Tensor:
        t = self._tensor
        if t is None:
            t = self._tensor = torch.empty(self._shape, dtype=self._dtype, device=_META)
        return t


def _empty(shape: Sequence[int], like: Any) -> Abstract:
    """A contiguous meta result of ``like``'s dtype, made as a tensor only when a kernel needs it."""
    return Abstract(tuple(shape), like.dtype)


def _is_meta(x: Any) -> bool:
    return type(x) is Abstract or (isinstance(x, torch.Tensor) and x.device == _META)


def _only_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The single positional, contiguous meta tensor of a ``mod(x)`` call, else None.

    Contiguous inputs give contiguous results in every kernel ruled here, so the layout of what a rule
    builds matches the kernel's too (a later ``view`` succeeds or fails alike)."""
    if kwargs or len(args) != 1 or not _is_meta(args[0]) or not args[0].is_contiguous():
        return None
    return args[0]


def _same_dtype(x: torch.Tensor, *tensors: Any) -> bool:
    return all(t is None or (_is_tensor(t) and t.dtype == x.dtype) for t in tensors)


def _is_tensor(t: Any) -> bool:
    return type(t) is Abstract or isinstance(t, torch.Tensor)


def _no_hooks(mod: nn.Module) -> bool:
    """Hooks may replace inputs or outputs: only a hook-free call is read from a rule."""
    return not (
        mod._forward_hooks
        or mod._forward_pre_hooks
        or module_hooks._global_forward_hooks
        or module_hooks._global_forward_pre_hooks
        or module_hooks._global_forward_hooks_always_called
    )


_PLAIN_LOOKUP: dict[tuple[type, str], bool] = {}


def module_tensor(mod: nn.Module, attr: str) -> Any:
    """``getattr(mod, attr, None)``, read straight from the module's parameter and buffer tables when
    that is where Python's lookup would end.

    A parameter (``weight``) is not in the instance ``__dict__``: ``getattr`` misses in the class and
    the instance, raises and catches an AttributeError, and reaches ``nn.Module.__getattr__`` (1.5 µs,
    six times per BatchNorm). Where the class neither defines ``attr`` (a property of a
    parametrization, say) nor changes attribute lookup, and the instance dict does not hold it, the
    answer is ``__getattr__``'s: ``_parameters``, then ``_buffers``, then ``_modules``."""
    cls = type(mod)
    plain = _PLAIN_LOOKUP.get((cls, attr))
    if plain is None:
        plain = _PLAIN_LOOKUP[(cls, attr)] = (
            cls.__getattr__ is nn.Module.__getattr__
            and cls.__getattribute__ is object.__getattribute__
            and not hasattr(cls, attr)
        )
    d = mod.__dict__
    if not plain or attr in d:
        return getattr(mod, attr, None)
    for table in ("_parameters", "_buffers", "_modules"):
        entries = d.get(table)
        if entries is None:  # a module whose __init__ did not run: Python's own lookup decides
            return getattr(mod, attr, None)
        found = entries.get(attr, _MISSING_ATTR)
        if found is not _MISSING_ATTR:
            return found
    return None


_MISSING_ATTR: Any = object()


def module_rule(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
    """The meta result of ``mod(*args, **kwargs)`` from a rule, or None to run the module."""
    rule = MODULE_RULES.get(type(mod))
    if rule is None or not _no_hooks(mod):
        return None
    return rule(mod, args, kwargs)


def function_rule(target: Any, args: tuple, kwargs: dict) -> Any:
    """The meta result of ``target(*args, **kwargs)`` from a rule, or None to call it."""
    try:
        rule = FUNCTION_RULES.get(target)
    except TypeError:  # an unhashable callable has no rule
        return None
    return None if rule is None else rule(target, args, kwargs)


def _modules(*types: type) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for t in types:
            MODULE_RULES[t] = fn
        return fn

    return deco


def _functions(*targets: Any) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for t in targets:
            FUNCTION_RULES[t] = fn
        return fn

    return deco


# -- modules ------------------------------------------------------------------------------------------
@_modules(
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
    nn.LeakyReLU, nn.ELU, nn.Mish,
)  # fmt: skip
def _activation(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Elementwise on a floating tensor: the input's shape and dtype."""
    x = _only_input(args, kwargs)
    if x is None or not x.is_floating_point():
        return None
    return _empty(x.shape, x)


@_modules(nn.Identity, nn.Dropout)
def _passthrough(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
    """``Identity`` returns its input; ``Dropout`` too when not training (tracing runs in eval mode)."""
    x = _only_input(args, kwargs)
    if x is None or mod.training or (isinstance(mod, nn.Dropout) and not x.is_floating_point()):
        return None
    return x


_BN_RANKS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}


@_modules(*_BN_RANKS)
def _batch_norm(mod: Any, args: tuple, kwargs: dict) -> Any:
    """Eval-mode batch norm with running statistics: the input's shape (the rank and channel count
    the module checks are checked here; batch statistics, with their batch-size error, fall back)."""
    x = _only_input(args, kwargs)
    if x is None or mod.training or not mod.track_running_stats:
        return None
    w, b, mean, var = (module_tensor(mod, a) for a in ("weight", "bias", "running_mean", "running_var"))
    if mean is None or x.dim() not in _BN_RANKS[type(mod)] or x.shape[1] != mod.num_features:
        return None
    if not x.is_floating_point() or not _same_dtype(x, w, b, mean, var):
        return None
    if any(t is not None and tuple(t.shape) != (mod.num_features,) for t in (w, b)):
        return None
    return _empty(x.shape, x)


@_modules(nn.LayerNorm)
def _layer_norm(mod: Any, args: tuple, kwargs: dict) -> Any:
    """Layer norm over the trailing ``normalized_shape``: the input's shape, laid out contiguously
    whatever the input's layout (the kernel normalizes ``input.contiguous()``; a permuted input, as
    ConvNeXt's channels-last blocks give it, is common)."""
    if kwargs or len(args) != 1 or not _is_meta(args[0]):
        return None
    return _layer_norm_result(args[0], tuple(mod.normalized_shape), mod.weight, mod.bias)


_LN_ARGS = ("input", "normalized_shape", "weight", "bias", "eps")


@_functions(F.layer_norm)
def _layer_norm_fn(target: Any, args: tuple, kwargs: dict) -> Any:
    """``F.layer_norm`` (torchvision's ``LayerNorm2d`` calls it on a permuted input): as the module."""
    if len(args) > len(_LN_ARGS) or any(k not in _LN_ARGS[len(args) :] for k in kwargs):
        return None
    bound = {"weight": None, "bias": None, "eps": 1e-5, **dict(zip(_LN_ARGS, args)), **kwargs}
    x: Any = bound.get("input")
    norm, eps = bound.get("normalized_shape"), bound["eps"]
    if not _is_meta(x) or not isinstance(norm, list | tuple) or not all(type(d) is int for d in norm):
        return None
    if isinstance(eps, bool) or not isinstance(eps, int | float):
        return None
    w, b = bound["weight"], bound["bias"]
    if any(t is not None and not _is_meta(t) for t in (w, b)):
        return None
    return _layer_norm_result(x, tuple(norm), w, b)


def _layer_norm_result(x: torch.Tensor, norm: tuple, w: Any, b: Any) -> Any:
    if not x.is_floating_point() or not _same_dtype(x, w, b):
        return None
    k = len(norm)
    if k == 0 or x.dim() < k or tuple(x.shape[-k:]) != norm or x.numel() == 0:
        return None
    if any(t is not None and tuple(t.shape) != norm for t in (w, b)):
        return None
    return _empty(x.shape, x)


@_modules(nn.GroupNorm)
def _group_norm(mod: Any, args: tuple, kwargs: dict) -> Any:
    x = _only_input(args, kwargs)
    if x is None or not x.is_floating_point() or not _same_dtype(x, mod.weight, mod.bias):
        return None
    c = mod.num_channels
    if x.dim() < 2 or x.shape[1] != c or mod.num_groups <= 0 or c % mod.num_groups:
        return None
    if any(t is not None and tuple(t.shape) != (c,) for t in (mod.weight, mod.bias)):
        return None
    return _empty(x.shape, x)


@_modules(nn.Linear)
def _linear(mod: Any, args: tuple, kwargs: dict) -> Any:
    x = _only_input(args, kwargs)
    w, bias = module_tensor(mod, "weight"), module_tensor(mod, "bias")
    if x is None or not x.is_floating_point() or not isinstance(w, torch.Tensor) or w.dim() != 2:
        return None
    if x.dim() < 1 or x.shape[-1] != w.shape[1] or not _same_dtype(x, w, bias):
        return None
    if bias is not None and tuple(bias.shape) != (w.shape[0],):
        return None
    return _empty((*x.shape[:-1], w.shape[0]), x)


@_modules(nn.AdaptiveAvgPool2d)
def _adaptive_avg_pool2d(mod: Any, args: tuple, kwargs: dict) -> Any:
    """Average pooling to a fixed spatial size (squeeze-excitation blocks, classifier heads: a
    Python-decomposed kernel of 2 ms): ``(N, C, *output_size)``, None keeping the input's size."""
    return _pooled(_only_input(args, kwargs), mod.output_size)


@_functions(F.adaptive_avg_pool2d)
def _adaptive_avg_pool2d_fn(target: Any, args: tuple, kwargs: dict) -> Any:
    bound = {**dict(zip(("input", "output_size"), args)), **kwargs}
    if len(args) > 2 or len(bound) != 2 or any(k not in ("input", "output_size") for k in bound):
        return None
    x = bound["input"]
    return _pooled(x if _is_meta(x) and x.is_contiguous() else None, bound["output_size"])


def _pooled(x: torch.Tensor | None, size: Any) -> Any:
    """A contiguous, non-empty batched floating input (its result is contiguous too) pooled to ``size``."""
    if x is None or not x.is_floating_point() or x.dim() != 4 or any(d <= 0 for d in x.shape):
        return None
    sizes = (size, size) if isinstance(size, int) else size
    if not isinstance(sizes, list | tuple) or len(sizes) != 2:
        return None
    out = []
    for s, d in zip(sizes, x.shape[2:]):
        s = d if s is None else s
        if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
            return None
        out.append(s)
    return _empty((x.shape[0], x.shape[1], *out), x)


def _pair(v: Any, empty: Any = None) -> tuple[int, int] | None:
    """A 2-d pooling parameter as torch unpacks it: an int or one or two ints; ``empty`` for ``()``."""
    if type(v) is int:
        return (v, v)
    if not isinstance(v, list | tuple) or not all(type(d) is int for d in v):
        return None
    if len(v) == 0:
        return empty
    if len(v) == 1:
        return (v[0], v[0])
    return (v[0], v[1]) if len(v) == 2 else None


@_modules(nn.MaxPool2d, nn.AvgPool2d)
def _pool2d(mod: Any, args: tuple, kwargs: dict) -> Any:
    """Batched 2-d max or average pooling (stem and transition pools): each spatial size from torch's
    pooling formula, ``ceil_mode`` included; whatever the kernel would reject (zero stride, padding
    over half the kernel, an empty result) falls back to it."""
    x = _only_input(args, kwargs)
    if x is None or not x.is_floating_point() or x.dim() != 4 or any(d <= 0 for d in x.shape):
        return None
    kernel = _pair(mod.kernel_size)
    stride = _pair(mod.stride, empty=kernel)
    pad = _pair(mod.padding)
    if isinstance(mod, nn.MaxPool2d):
        if mod.return_indices:
            return None
        dilation = _pair(mod.dilation)
    else:
        dilation = (1, 1)
        if mod.divisor_override == 0:
            return None
    if kernel is None or stride is None or pad is None or dilation is None or type(mod.ceil_mode) is not bool:
        return None
    out = []
    for i, k, st, p, d in zip(x.shape[2:], kernel, stride, pad, dilation):
        if k <= 0 or st <= 0 or d <= 0 or p < 0 or p > ((k - 1) * d + 1) // 2:
            return None
        o = (i + 2 * p - d * (k - 1) - 1 + (st - 1 if mod.ceil_mode else 0)) // st + 1
        if mod.ceil_mode and (o - 1) * st >= i + p:
            o -= 1
        if o < 1:
            return None
        out.append(o)
    return _empty((x.shape[0], x.shape[1], *out), x)


_CONV_DIMS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


@_modules(*_CONV_DIMS)
def _conv(mod: Any, args: tuple, kwargs: dict) -> Any:
    """Batched convolution with zero padding: the output size of each spatial axis in closed form."""
    x = _only_input(args, kwargs)
    nd = _CONV_DIMS[type(mod)]
    w, bias = module_tensor(mod, "weight"), module_tensor(mod, "bias")
    if x is None or not x.is_floating_point() or mod.padding_mode != "zeros" or x.dim() != nd + 2:
        return None
    if not isinstance(w, torch.Tensor) or w.dim() != nd + 2 or not _same_dtype(x, w, bias):
        return None
    groups = mod.groups
    if groups <= 0 or x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        return None
    if bias is not None and tuple(bias.shape) != (w.shape[0],):
        return None
    if any(d <= 0 for d in x.shape):
        return None
    spatial = tuple(x.shape[2:])
    pad = mod.padding
    if isinstance(pad, str):
        if pad == "same" and all(s == 1 for s in mod.stride):
            return _empty((x.shape[0], w.shape[0], *spatial), x)
        if pad != "valid":
            return None
        pad = (0,) * nd
    out = []
    for i, k, s, p, d in zip(spatial, w.shape[2:], mod.stride, pad, mod.dilation):
        if s <= 0 or d <= 0 or p < 0:
            return None
        o = (i + 2 * p - d * (k - 1) - 1) // s + 1
        if o <= 0:
            return None
        out.append(o)
    if len(out) != nd:
        return None
    return _empty((x.shape[0], w.shape[0], *out), x)


_MHA_ARGS = (
    "query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
    "is_causal",
)  # fmt: skip
_MHA_DEFAULTS = {"key_padding_mask": None, "need_weights": True, "attn_mask": None,
                 "average_attn_weights": True, "is_causal": False}  # fmt: skip


@_modules(nn.MultiheadAttention)
def _mha(mod: Any, args: tuple, kwargs: dict) -> Any:
    """Batched attention without masks and without weights: ``(output shaped like query, None)``."""
    if len(args) > len(_MHA_ARGS) or any(k not in _MHA_ARGS for k in kwargs):
        return None
    if any(k in kwargs for k in _MHA_ARGS[: len(args)]):
        return None  # given twice: let the module raise
    bound: dict[str, Any] = {**_MHA_DEFAULTS, **dict(zip(_MHA_ARGS, args)), **kwargs}
    q: Any = bound.get("query")
    k: Any = bound.get("key")
    v: Any = bound.get("value")
    if not (_is_meta(q) and _is_meta(k) and _is_meta(v)) or not q.is_floating_point():
        return None
    if bound["need_weights"] is not False or bound["is_causal"] is not False:
        return None
    if bound["key_padding_mask"] is not None or bound["attn_mask"] is not None:
        return None
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or mod.training:
        return None
    if q.shape[2] != mod.embed_dim or k.shape[2] != mod.kdim or v.shape[2] != mod.vdim:
        return None
    b = 0 if mod.batch_first else 1
    if not (q.shape[b] == k.shape[b] == v.shape[b]) or k.shape[1 - b] != v.shape[1 - b]:
        return None
    if any(d <= 0 for t in (q, k, v) for d in t.shape) or not all(t.is_contiguous() for t in (q, k, v)):
        return None
    if not _same_dtype(q, k, v, *mod.parameters()):
        return None
    if mod.batch_first:  # the kernel computes (L, N, E) and returns it transposed
        return (_empty((q.shape[1], q.shape[0], q.shape[2]), q).tensor.transpose(1, 0), None)
    return (_empty(q.shape, q), None)


# -- functions ----------------------------------------------------------------------------------------
def _broadcast(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...] | None:
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and x != 1 and y != 1:
            return None
        out.append(y if x == 1 else x)
    return tuple(reversed(out))


@_functions(operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.mul, torch.sub)
def _binary(target: Any, args: tuple, kwargs: dict) -> Any:
    """Floating tensor (op) tensor of the same dtype, or (op) a Python number: broadcast shape, that dtype."""
    if kwargs or len(args) != 2:
        return None
    a, b = args
    if _is_meta(a) and _is_meta(b):
        if a.dtype != b.dtype or not a.is_floating_point() or not (a.is_contiguous() and b.is_contiguous()):
            return None
        if a.shape == b.shape:
            return _empty(a.shape, a)
        shape = _broadcast(a.shape, b.shape)
        return None if shape is None else _empty(shape, a)
    t, s = (a, b) if _is_meta(a) else (b, a)
    if not _is_meta(t) or not t.is_floating_point() or not t.is_contiguous():
        return None
    if isinstance(s, bool) or not isinstance(s, int | float):
        return None
    if target is operator.truediv and t is b:
        return None  # number / tensor: rare; its meta kernel is cheap enough
    return _empty(t.shape, t)


@_functions(torch.cat, torch.concat)
def _cat(target: Any, args: tuple, kwargs: dict) -> Any:
    """Same-dtype, same-rank, non-empty tensors: the sum along ``dim``, the common size elsewhere."""
    if not args or len(args) > 2 or any(k != "dim" for k in kwargs) or (len(args) == 2 and kwargs):
        return None
    xs = args[0]
    dim = args[1] if len(args) == 2 else kwargs.get("dim", 0)
    if not isinstance(xs, list | tuple) or not xs or isinstance(dim, bool) or not isinstance(dim, int):
        return None
    first = xs[0]
    if not all(_is_meta(x) for x in xs):
        return None
    rank = first.dim()
    if rank == 0 or not -rank <= dim < rank:
        return None
    dim %= rank
    total = 0
    dtype, head, tail = first.dtype, first.shape[:dim], first.shape[dim + 1 :]
    for x in xs:
        if x.dtype != dtype or x.dim() != rank or x.numel() == 0 or not x.is_contiguous():
            return None
        shape = x.shape
        if shape[:dim] != head or shape[dim + 1 :] != tail:  # every axis but ``dim`` agrees
            return None
        total += shape[dim]
    return _empty((*head, total, *tail), first)


@_functions(F.relu)
def _relu_fn(target: Any, args: tuple, kwargs: dict) -> Any:
    """``F.relu(x)`` on a floating tensor: its shape; with ``inplace=True`` the input itself, as
    ``torch.relu_`` returns it."""
    if len(args) > 2 or any(k != "inplace" for k in kwargs) or (len(args) == 2 and kwargs):
        return None
    inplace = args[1] if len(args) == 2 else kwargs.get("inplace", False)
    x = _only_input(args[:1], {})
    if x is None or not x.is_floating_point() or type(inplace) is not bool:
        return None
    return x if inplace else _empty(x.shape, x)


_FLATTEN_ARGS = ("input", "start_dim", "end_dim")


@_functions(torch.flatten)
def _flatten_fn(target: Any, args: tuple, kwargs: dict) -> Any:
    """``torch.flatten(x, start_dim, end_dim)`` over at least two axes (the classifier heads)."""
    if len(args) > 3 or any(k not in _FLATTEN_ARGS[len(args) :] for k in kwargs):
        return None
    bound = {"start_dim": 0, "end_dim": -1, **dict(zip(_FLATTEN_ARGS, args)), **kwargs}
    return _flattened(bound.get("input"), bound["start_dim"], bound["end_dim"])


@_modules(nn.Flatten)
def _flatten_mod(mod: Any, args: tuple, kwargs: dict) -> Any:
    return _flattened(_only_input(args, kwargs), mod.start_dim, mod.end_dim)


def _flattened(x: Any, start: Any, end: Any) -> Any:
    """The contiguous input viewed with axes ``start..end`` merged; a single axis or an empty tensor
    falls back to the kernel."""
    if x is None or not _is_meta(x) or not x.is_contiguous() or not (type(start) is type(end) is int):
        return None
    rank = x.dim()
    if rank == 0 or not (-rank <= start < rank and -rank <= end < rank) or x.numel() == 0:
        return None
    start, end = start % rank, end % rank
    if start >= end:
        return None
    shape = tuple(x.shape)
    return _empty((*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :]), x)
