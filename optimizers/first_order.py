"""First-order search directions D (the "gradient variant" of ALGORITHMS.md §4.2 step 1).

Every group optimizer moves a parameter by ``x ← decay·x − lr·D`` outside the groups it penalizes, so
these kernels return D instead of updating the parameter; the group math then reads the same D (for
cosines, λ bounds and the trial point). They follow ``torch.optim.SGD`` and ``Adam``/``AdamW``
exactly (same state names, same first-step rules: SGD with these directions is bit-identical to
torch's, except where a step asks for the fused momentum update, see :func:`sgd_direction`).

Two forms compute the same numbers. :func:`direction` works on one tensor: a step that also needs
per-ZIG statistics reads each parameter and its direction several times, and doing all of that per
parameter while it is warm in cache is much cheaper than streaming every parameter once per
operation (torch's own SGD and Adam take the per-tensor path on CPU too). :func:`directions` batches
a plain step with ``torch._foreach_*`` kernels, which is what a GPU needs: a few kernel launches
instead of a few per parameter.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping

import torch

__all__ = ["VARIANTS", "adam_direction", "decoupled_decay", "direction", "directions", "sgd_direction"]

VARIANTS = ("sgd", "adam", "adamw")

State = MutableMapping[str, object]
"""One parameter's optimizer state (``torch.optim.Optimizer.state[p]``): untyped by torch, so every
read goes through :func:`_tensor` or :func:`_step`, which say what this module stored there."""


def _tensor(state: State, key: str) -> torch.Tensor:
    """A buffer this module stored (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``)."""
    value = state[key]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"optimizer state {key!r} is a {type(value).__name__}, not a tensor")
    return value


def _step(state: State) -> int:
    """The Adam step count (an int here; a tensor in a state dict written by ``torch.optim.Adam``)."""
    value = state["step"]
    if not isinstance(value, int | float | torch.Tensor):
        raise TypeError(f"optimizer state 'step' is a {type(value).__name__}, not a number")
    return int(value)


def sgd_direction(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: State,
    *,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    fused: bool = False,
) -> torch.Tensor:
    """D for SGD: ``g + wd·x`` through the momentum buffer (the first buffer is that gradient).

    ``fused``: the buffer update ``μ·b + g`` (no dampening) as one kernel instead of torch's two —
    one read-write pass over the buffer less, but the multiply-add may round once where torch rounds
    twice, so D can differ from ``torch.optim.SGD``'s in the last bit. Plain steps never fuse (they
    stay bit-identical to torch); steps that read per-ZIG statistics do.
    """
    d = grad.add(param, alpha=weight_decay) if weight_decay else grad
    if momentum == 0:
        return d
    if state.get("momentum_buffer") is None:
        buf = state["momentum_buffer"] = torch.clone(d).detach()
    else:
        buf = _tensor(state, "momentum_buffer")
        if fused and dampening == 0:
            torch.add(d, buf, alpha=momentum, out=buf)
        else:
            buf.mul_(momentum).add_(d, alpha=1.0 - dampening)
    return d.add(buf, alpha=momentum) if nesterov else buf


def adam_direction(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: State,
    *,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> torch.Tensor:
    """D for Adam: bias-corrected ``m̂ / (sqrt(v̂) + eps)``; ``weight_decay`` is the coupled (Adam) kind."""
    beta1, beta2 = betas
    if "exp_avg" not in state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    step = state["step"] = _step(state) + 1
    if weight_decay:
        grad = grad.add(param, alpha=weight_decay)
    exp_avg, exp_avg_sq = _tensor(state, "exp_avg"), _tensor(state, "exp_avg_sq")
    exp_avg.lerp_(grad, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1.0 - beta2**step)).add_(eps)
    return torch.div(exp_avg, denom, out=denom).div_(1.0 - beta1**step)


def direction(
    param: torch.Tensor, grad: torch.Tensor, state: State, group: dict, fused: bool = False
) -> torch.Tensor:
    """D for the first-order variant named in ``group["variant"]`` (hyperparameters from ``group``);
    ``fused``: see :func:`sgd_direction`."""
    if group["variant"] == "sgd":
        return sgd_direction(
            param,
            grad,
            state,
            momentum=group["momentum"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            weight_decay=group["weight_decay"],
            fused=fused,
        )
    coupled = group["weight_decay"] if group["variant"] == "adam" else 0.0
    return adam_direction(param, grad, state, betas=group["betas"], eps=group["eps"], weight_decay=coupled)


def directions(
    params: list[torch.Tensor], grads: list[torch.Tensor], states: list[State], group: dict
) -> list[torch.Tensor]:
    """:func:`direction` for many tensors at once, with ``torch._foreach_*`` kernels (same numbers)."""
    if not params:
        return []
    if group["variant"] != "sgd":
        coupled = group["weight_decay"] if group["variant"] == "adam" else 0.0
        return _adam_foreach(params, grads, states, group["betas"], group["eps"], coupled)
    momentum, wd = group["momentum"], group["weight_decay"]
    ds = list(torch._foreach_add(grads, params, alpha=wd)) if wd else list(grads)
    if momentum == 0:
        return ds
    old = [i for i, st in enumerate(states) if st.get("momentum_buffer") is not None]
    if old:
        bufs = [_tensor(states[i], "momentum_buffer") for i in old]
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, [ds[i] for i in old], alpha=1.0 - group["dampening"])
    for st, d in zip(states, ds):
        if st.get("momentum_buffer") is None:
            st["momentum_buffer"] = torch.clone(d).detach()
    bufs = [_tensor(st, "momentum_buffer") for st in states]
    return list(torch._foreach_add(ds, bufs, alpha=momentum)) if group["nesterov"] else bufs


def _adam_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    states: list[State],
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> list[torch.Tensor]:
    beta1, beta2 = betas
    for p, st in zip(params, states):
        if "exp_avg" not in st:
            st["step"] = 0
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["step"] = _step(st) + 1
    if weight_decay:
        grads = list(torch._foreach_add(grads, params, alpha=weight_decay))
    exp_avgs = [_tensor(st, "exp_avg") for st in states]
    exp_avg_sqs = [_tensor(st, "exp_avg_sq") for st in states]
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    steps = [_step(st) for st in states]
    denom = list(torch._foreach_sqrt(exp_avg_sqs))
    torch._foreach_div_(denom, [math.sqrt(1.0 - beta2**t) for t in steps])
    torch._foreach_add_(denom, eps)
    out = list(torch._foreach_div(exp_avgs, denom))
    torch._foreach_div_(out, [1.0 - beta1**t for t in steps])
    return out


def decoupled_decay(variant: str, lr: float, weight_decay: float) -> float:
    """The factor AdamW multiplies the parameters by before its step (1 for the coupled variants)."""
    return 1.0 - lr * weight_decay if variant == "adamw" else 1.0
