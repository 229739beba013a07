"""Group-sparse optimizers over the ZIGs of a ``graphcore`` analysis.

Every optimizer is a ``torch.optim.Optimizer`` built as ``Opt(model, analysis, **hyperparameters)``
and found by name with :func:`get`; the only contract with the rest of zigraph is that the ZIGs it
removes end up exactly zero (:func:`removed_zigs` reads them back from the parameters).
"""

from optimizers.base import GroupOptimizer, removed_zigs
from optimizers.dhspg import DHSPG
from optimizers.h2spg import H2SPG
from optimizers.hspg import HSPG
from optimizers.proxsg import ProxSG
from optimizers.registry import UnknownOptimizerError, available, get, register

__all__ = [
    "DHSPG",
    "H2SPG",
    "HSPG",
    "GroupOptimizer",
    "ProxSG",
    "UnknownOptimizerError",
    "available",
    "get",
    "register",
    "removed_zigs",
]
