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
    """
    if parametrisation == "linear":
        return weight * scale
    if type(weight) in _PLAIN and not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
        return _Symlog.apply(weight, scale)
    return traced_coefficients(weight, scale, parametrisation)


def traced_coefficients(weight: torch.Tensor, scale: float, parametrisation: str):
    """:func:`coefficients_from_weight` in ordinary operations, with autograd's
    gradient: what torch.compile and torch.export trace."""
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


_PLAIN = (torch.Tensor, nn.Parameter)  # not fake, functorch or other subclassed tensors


class _Symlog(torch.autograd.Function):
    """The symlog map in eager mode, in fewer operations than the traced form above
    (which torch.compile and torch.export see): the same values and gradients bit
    for bit (tests/test_runtime.py), at a fraction of the per-call cost.

    expm1(|w|) is expm1(w) for w > 0 and expm1(-w) for w <= 0, so
    where(w > 0, e, -e) is the traced form's value (and w itself for w = +-0 or
    NaN, to keep the traced form's sign of zero and of NaN); the
    traced form's gradient is (g * scale) * (expm1 + 1) on either branch (autograd's
    expm1 rule), which is (g * scale) * (|shaped| + 1) = (g * scale) * (e + 1). One
    difference: at a NaN weight the traced form's clamp masks the gradient (0, or
    the c1/c2 path's), where this gives NaN; a layer with a NaN weight raises
    CoefficientsDiverged in its forward, so no training step sees either."""

    @staticmethod
    def forward(ctx, weight, scale):
        coeffs, e = parametrised(weight, scale, "symlog")
        ctx.save_for_backward(e)
        ctx.scale = scale
        return coeffs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (e,) = ctx.saved_tensors
        return parametrisation_backward(grad, e, ctx.scale), None


def parametrised(
    weight: torch.Tensor, scale: float, parametrisation: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the coefficients of ``weight``, what their backward needs), outside autograd:
    the eager form of :func:`coefficients_from_weight`, for :class:`_Symlog` and the
    layer's fused eager path (deu._autograd)."""
    if parametrisation == "linear":
        return weight * scale, None
    w = weight[..., :_SHAPED]
    e = torch.expm1(w.abs())
    # w = +-0 and NaN come through as they are, with their sign, as in the traced
    # form (whose clamp passes -0 and NaN through).
    shaped = torch.where(w > 0, e, torch.where(w < 0, -e, w))
    return torch.cat([shaped, weight[..., _SHAPED:]], dim=-1) * scale, e


def parametrisation_backward(
    grad: torch.Tensor, saved: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """d loss / d weight from d loss / d coeffs, bit for bit the traced form's."""
    scaled = grad * scale
    if saved is not None:
        scaled[..., :_SHAPED] *= saved + 1
    return scaled
