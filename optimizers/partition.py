"""DHSPG's one-time split of the prunable ZIGs into important and redundant (ALGORITHMS.md §4.3).

The saliency score favours a group as redundant when the negative direction already points towards
the origin (high cosine between −D_g and −x_g) and its average magnitude is small; both terms are
L2-normalized over all eligible ZIGs, so the ranking is global across layers.
"""

from __future__ import annotations

import torch

from optimizers.selection import select_with_caps

__all__ = ["choose_redundant", "saliency_scores"]


def saliency_scores(
    x2: torch.Tensor, xd: torch.Tensor, d2: torch.Tensor, numel: torch.Tensor, eligible: torch.Tensor
) -> torch.Tensor:
    """``0.5·cos/||cos|| + 0.5·inv/||inv||`` per ZIG; ``-inf`` where not eligible.

    ``cos_g = <x_g, D_g> / (||x_g|| ||D_g||)`` (eps 1e-8), ``inv_g = 1/(||x_g||/n_g + 1e-6)``.
    """
    xn, dn = x2.clamp_min(0).sqrt(), d2.clamp_min(0).sqrt()
    cos = xd / (xn * dn).clamp_min(1e-8)
    inv = 1.0 / (xn / numel.clamp_min(1) + 1e-6)
    cos = torch.where(eligible, cos, torch.zeros_like(cos))
    inv = torch.where(eligible, inv, torch.zeros_like(inv))
    score = 0.5 * cos / cos.norm().clamp_min(1e-12) + 0.5 * inv / inv.norm().clamp_min(1e-12)
    return torch.where(eligible, score, torch.full_like(score, -torch.inf))


def choose_redundant(
    score: torch.Tensor,
    eligible: torch.Tensor,
    group: torch.Tensor,
    cap: torch.Tensor,
    group_size: torch.Tensor,
    count: int,
    divisible: int = 1,
) -> torch.Tensor:
    """The ``count`` eligible ZIGs with the largest score, at most ``cap[g]`` per node group.

    With ``divisible = q > 1`` the number of important ZIGs left in each group is rounded to a
    multiple of q (``max(round(kept/q), 1)·q``), and groups with at most q ZIGs keep all of them,
    as the authors' code does; the lowest-score ZIGs are the ones kept.
    """
    chosen = select_with_caps(eligible, -score, group, cap, count)
    if divisible <= 1:
        return chosen
    redundant = torch.bincount(group[chosen], minlength=group_size.numel())
    kept = group_size - redundant
    kept = torch.floor(kept.double() / divisible + 0.5).clamp_min(1).long() * divisible
    redundant = torch.where(group_size <= divisible, torch.zeros_like(kept), (group_size - kept).clamp_min(0))
    return select_with_caps(eligible, -score, group, torch.minimum(redundant, cap), None)
