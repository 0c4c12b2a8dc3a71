"""Differential Equation Units: learnable activations from the closed-form
solutions of a*y'' + b*y' + c*y = u(t), one ODE per neuron.

>>> import torch, deu
>>> act = deu.DEU(4, init="relu")
>>> act(torch.tensor([[-1.0, 0.0, 1.0, 2.0]])).round(decimals=6).tolist()
[[0.0, 0.0, 1.0, 2.0]]
"""

from deu import functional
from deu._subspaces import SUBSPACE_NAMES, subspaces
from deu.health import HealthReport, LayerHealth, health
from deu.lazy import LazyDEU, PerCallSite, materialize, replace_activations
from deu.module import DEU, PRESETS, CoefficientsDiverged

__all__ = [
    "CoefficientsDiverged",
    "DEU",
    "HealthReport",
    "LayerHealth",
    "LazyDEU",
    "PRESETS",
    "PerCallSite",
    "SUBSPACE_NAMES",
    "functional",
    "health",
    "materialize",
    "replace_activations",
    "subspaces",
]
__version__ = "0.1.0"
