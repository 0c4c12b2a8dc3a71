"""How a DEU layer's learnable ``weight`` becomes its ODE coefficients.

"symlog", the default: a, b, c = scale * sign(w) * (e^|w| - 1) (c1, c2 linear),
and "linear", the paper's: every coefficient scale * w.
"""

from __future__ import annotations

import torch
from torch import nn

from deu._generated import CLASSIFIED

PARAMETRISATIONS = ("symlog", "linear")
# The classified coefficients (a, b, c) are shaped; the initial conditions stay linear.
_SHAPED = len(CLASSIFIED)


def coefficients_from_weight(weight: torch.Tensor, scale: float, parametrisation: str):
    """The coefficients (a, b, c, c1, c2) of ``weight`` (..., 5).

    "linear": scale * weight. "symlog": a, b, c = scale * sign(w) * (e^|w| - 1),
    a bijection of the real line, linear with slope ``scale`` at 0 (the linear
    map's, so a neuron leaves the epsilon ball as before) and exponential beyond
    |w| ~ 1: a step of the weight changes a coefficient by a fraction of
    (scale + |coefficient|), so coefficients of every size move at a rate
    proportional to themselves (a slope 1/b halves as fast from 2 as from 0.2),
    and the step's effect on y follows p * dy/dp, which scaling a, b, c together
    leaves bounded (the forced response scales as 1/lambda). c1, c2 = scale * w.

    A layer's eager CPU call computes the same map, bit for bit, in one extension
    call (deu/csrc/parametrisation.h, deu._autograd.layer_apply).
    """
    if parametrisation == "linear":
        return weight * scale
    w = weight[..., :_SHAPED]
    # exp(w) - 1 for w > 0 and -(exp(-w) - 1) for w <= 0: slope 1 at 0 from both
    # sides (sign(w) * expm1(|w|) would have a zero gradient at w = 0, where
    # ReLU-initialised a and c sit), and the branch not taken sees 0, not inf.
    positive = torch.expm1(w.clamp(min=0))
    negative = -torch.expm1((-w).clamp(min=0))
    shaped = torch.where(w > 0, positive, negative)
    return torch.cat([shaped, weight[..., _SHAPED:]], dim=-1) * scale


def coefficient_slope(weight: torch.Tensor, scale: float, parametrisation: str):
    """d coefficient / d weight, elementwise: scale (linear, and c1, c2), or
    scale * e^|w| = scale + |p| (symlog a, b, c)."""
    slope = torch.full_like(weight, scale)
    if parametrisation == "symlog":
        slope[..., :_SHAPED] = scale * torch.exp(weight[..., :_SHAPED].abs())
    return slope


def weight_from_coefficients(coeffs: torch.Tensor, scale: float, parametrisation: str):
    """The inverse of :func:`coefficients_from_weight`."""
    if parametrisation == "linear":
        return coeffs / scale
    p = coeffs[..., :_SHAPED] / scale
    shaped = torch.sign(p) * torch.log1p(p.abs())
    return torch.cat([shaped, coeffs[..., _SHAPED:] / scale], dim=-1)


# The tensor types the eager path takes: not fake, functorch or other subclasses.
_PLAIN = (torch.Tensor, nn.Parameter)
