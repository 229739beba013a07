"""Where a group-sparse optimizer stands against its target, and saying so when it fell short.

Why: a run shorter than the pruning window used to end with nothing pruned and no word about it.
Every optimizer that has a target reports :class:`SparsityProgress`; the last one built on a model
registers its note with ``graphcore.training_notes`` (weakly) so that ``construct.to_torch(model,
analysis)`` — where the training meets the smaller model — warns with the numbers
(:class:`TargetNotReachedWarning`) when the target was not reached.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from torch import nn

from graphcore import training_notes
from graphcore.training_notes import TargetNotReachedWarning

__all__ = ["SparsityProgress", "TargetNotReachedWarning", "remember"]


@dataclass(frozen=True)
class SparsityProgress:
    """The sparsity reached against the target; fractions are of the whole model's.

    ``target_zigs`` is K, the number of zero ZIGs the schedule ends with (known once the window has
    started; before, what the target asks for as far as it can be said in ZIGs, or None).
    """

    optimizer: str
    steps_done: int
    window_start: int  # the first step of the pruning window is window_start + 1
    window_end: int  # the window's last step: the target is reached by then
    zero_zigs: int
    target_zigs: int | None
    prunable_zigs: int
    params_kept: float
    flops_kept: float
    target_params_kept: float | None = None
    target_flops_kept: float | None = None

    @property
    def reached(self) -> bool:
        return (
            self.target_zigs is not None
            and self.steps_done > self.window_start
            and (self.zero_zigs >= self.target_zigs)
        )

    @property
    def note(self) -> str | None:
        """A plain sentence when the target is not reached: what was asked, what is there, and why."""
        if self.reached:
            return None
        asked = []
        if self.target_params_kept is not None:
            asked.append(f"{100 * self.target_params_kept:.1f}% of the parameters kept")
        if self.target_flops_kept is not None:
            asked.append(f"{100 * self.target_flops_kept:.1f}% of the FLOPs kept")
        if self.target_zigs is not None:
            asked.append(f"{self.target_zigs} of {self.prunable_zigs} prunable ZIGs zero")
        why = (
            f"its pruning window runs from step {self.window_start + 1} to {self.window_end}"
            if self.steps_done < self.window_end
            else "projection could not zero them all"
        )
        return (
            f"{self.optimizer} did not reach its target ({', '.join(asked) or 'its group sparsity'}): "
            f"after {self.steps_done} steps {self.zero_zigs} ZIGs are zero, keeping "
            f"{100 * self.params_kept:.1f}% of the parameters and {100 * self.flops_kept:.1f}% of the "
            f"FLOPs; {why}. Train to the end of the window, or give the schedule in epochs "
            "(steps_per_epoch=, start_pruning_epochs=, pruning_epochs=) or as fractions of the run "
            "(total_steps=)."
        )


def remember(model: nn.Module, optimizer: Any) -> None:
    """Register ``optimizer``'s note for ``model`` (graphcore.training_notes; held weakly)."""
    ref = weakref.ref(optimizer)

    def note() -> str | None:
        opt = ref()
        report = getattr(opt, "progress", None)
        return report().note if callable(report) else None

    training_notes.register(model, note)
