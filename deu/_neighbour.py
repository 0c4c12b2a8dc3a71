"""Outward gravitation by the paper's "neighbour" rule (the PyTorch path's, also
run by the Triton backend).

For a neuron with |p| < epsilon for p in (a, b, c), y does not depend on p, so
its gradient in p would be zero forever. The neighbour rule gives it the
gradient in p of the nearest neighbour h that is not singular in p:
p = epsilon*sign(p) (epsilon where p == 0), the other coefficients kept, and h's
initial conditions chosen so that h(t*) = f(t*) and h'(t*) = f'(t*) at t* = the
mean of the neuron's inputs in the batch (value only, where h is of first order).
(The default "derived" rule is an output of the generated kernels, chosen by
``deu._plan.summed_outputs``.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from deu._generated import OUTPUT_OF_COEFFICIENT, SUBSPACES
from deu._plan import (
    _A,
    _B,
    _C,
    _C1,
    _C2,
    NUM_COEFFICIENTS,
    Settings,
    _groups,
    _neuron_quantities,
    _neuron_shape,
    _reduce,
    _take,
)
from deu._subspaces import classify, unclassified_neighbour_error


def _evaluate_at(subspace, coeffs: torch.Tensor, t: torch.Tensor, settings: Settings):
    """(y, dy/dt) per neuron at one point t per neuron (all shapes (n,))."""
    k = subspace.neuron(*coeffs.unbind(1), settings.steepness, settings.max_exponent)
    outputs = subspace.derivatives(t, k)
    return outputs[0], outputs[1]


def _ridge_solve(m00, m01, m10, m11, r0, r1):
    """(c1, c2) minimising |m c - r|^2 + ridge |c|^2, elementwise over tensors.

    The ridge is at the dtype's rounding level of m^T m (eps * |m|_F^2 + tiny):
    no bias beyond rounding when m is well conditioned, a bounded answer when it
    is singular. Solved by Givens rotations of the stacked matrix [m; sqrt(ridge) I]
    (a QR factorisation), whose accuracy follows cond(m), not cond(m)^2 as the
    normal equations' would. The fused CPU kernel does the same operations in
    the same order.
    """
    info = torch.finfo(m00.dtype)
    lam = torch.sqrt(info.eps * (m00 * m00 + m01 * m01 + m10 * m10 + m11 * m11) + info.tiny)
    zero = torch.zeros_like(m00)

    def rotate(p0, p1, q0, q1, pr, qr):
        # Rotate rows p and q so that q's first entry becomes 0.
        rho = torch.sqrt(p0 * p0 + q0 * q0)
        nonzero = rho > 0
        safe = torch.where(nonzero, rho, torch.ones_like(rho))
        c = torch.where(nonzero, p0 / safe, torch.ones_like(rho))
        s = torch.where(nonzero, q0 / safe, zero)
        return rho, c * p1 + s * q1, c * pr + s * qr, c * q1 - s * p1, c * qr - s * pr

    # Rows [m00 m01 | r0], [m10 m11 | r1], [lam 0 | 0], [0 lam | 0].
    u00, u01, ur0, v11, vr1 = rotate(m00, m01, m10, m11, r0, r1)
    u00, u01, ur0, w11, wr = rotate(u00, u01, lam, zero, ur0, zero)
    u11, _, ur1, v11, vr1 = rotate(v11, zero, w11, zero, vr1, wr)
    u11, _, ur1, _, _ = rotate(u11, zero, lam, zero, ur1, zero)
    c2 = ur1 / u11
    c1 = (ur0 - u01 * c2) / u00
    return c1, c2


def _matched_initial_conditions(
    neighbour,
    coeffs: torch.Tensor,
    t_star: torch.Tensor,
    f: torch.Tensor,
    df: torch.Tensor,
    settings: Settings,
) -> torch.Tensor:
    """c1, c2 of the neighbour h so that h(t*) = f and h'(t*) = f' (a batched 2x2 solve).

    h and h' are affine in (c1, c2), so three evaluations give the system.  It is
    solved in the Tikhonov-regularised least-squares sense, which is the exact
    solution when the system is well conditioned and the minimum-norm one when
    it is not (a first-order neighbour, whose c2 column is zero).
    """

    def with_ic(c1: float, c2: float) -> tuple[torch.Tensor, torch.Tensor]:
        trial = coeffs.clone()
        trial[:, _C1], trial[:, _C2] = c1, c2
        return _evaluate_at(neighbour, trial, t_star, settings)

    h0, dh0 = with_ic(0.0, 0.0)
    h1, dh1 = with_ic(1.0, 0.0)
    h2, dh2 = with_ic(0.0, 1.0)
    # m (c1, c2) = r with m = [[m00, m01], [m10, m11]].
    m00, m01, m10, m11 = h1 - h0, h2 - h0, dh1 - dh0, dh2 - dh0
    r0, r1 = f - h0, df - dh0
    if neighbour.order < 2:
        # One free constant: match the value only.
        m10, m11, r1 = torch.zeros_like(m10), torch.zeros_like(m11), torch.zeros_like(r1)
    solution = torch.stack(_ridge_solve(m00, m01, m10, m11, r0, r1), -1)
    return torch.nan_to_num(solution, nan=0.0, posinf=0.0, neginf=0.0)


def _neighbours(subspace, coeffs_raw, effective, t_star, settings, neurons):
    """The gravitation neighbours of one group's neurons, singular coefficient by coefficient.

    Yields (p, neighbour subspace index, neuron indices within the group or
    None for all, the neighbours' coefficients with matched c1 and c2).
    ``neurons`` are the group's indices among all neurons (None: all), for errors.
    """

    def unclassified(p: int) -> Callable[[list[int]], Exception]:
        def error(bad: list[int]) -> Exception:
            named = bad if neurons is None else neurons[bad].tolist()
            return unclassified_neighbour_error(named, coeffs_raw[bad[0]], p)

        return error

    eps = settings.epsilon
    singular = [p for p, zero in zip((_A, _B, _C), subspace.zero, strict=True) if zero]
    if not singular:
        return
    f, df = _evaluate_at(subspace, effective, t_star, settings)
    for p in singular:
        moved = effective.clone()
        raw = coeffs_raw[:, p]
        # The sign as a tensor of the coefficients' dtype: a float32 eps written
        # into float64 would round below eps and stay singular.
        moved[:, p] = eps * torch.where(raw < 0, -1.0, 1.0).to(moved)
        moved_eff, neighbour_index = classify(moved, eps, settings.critical)
        for s, idx in _groups(neighbour_index, unclassified(p)):
            neighbour = SUBSPACES[s]
            h_coeffs = _take(moved_eff, 0, idx).clone()
            initial = _matched_initial_conditions(
                neighbour,
                h_coeffs,
                _take(t_star, 0, idx),
                _take(f, 0, idx),
                _take(df, 0, idx),
                settings,
            )
            h_coeffs[:, _C1], h_coeffs[:, _C2] = initial[:, 0], initial[:, 1]
            yield p, s, idx, h_coeffs


def _mean_input(x: torch.Tensor, dim: int) -> torch.Tensor:
    """t* of gravitation: each neuron's mean input, ignoring NaN, made finite."""
    axes = [d for d in range(x.dim()) if d != dim]
    if not axes:
        return torch.nan_to_num(x)
    mean = x.mean(dim=axes)
    if bool(torch.isnan(mean).any()):  # rare: only then pay for nanmean
        mean = torch.nanmean(x, dim=axes)
    return torch.nan_to_num(mean)


def _gravitation(
    subspace,
    coeffs_raw: torch.Tensor,
    effective: torch.Tensor,
    x: torch.Tensor,
    g: torch.Tensor,
    settings: Settings,
    neurons: torch.Tensor | None,
) -> torch.Tensor:
    """Gradient (n, 5) contributed by outward gravitation for one group's neurons
    (``neurons``: their indices among all neurons, None for all)."""
    dim = settings.dim
    grad = torch.zeros(effective.shape[0], NUM_COEFFICIENTS, dtype=x.dtype, device=x.device)
    if not any(subspace.zero):
        return grad
    shape = _neuron_shape(x, dim)
    t_star = _mean_input(x, dim)
    for p, s, idx, h_coeffs in _neighbours(
        subspace, coeffs_raw, effective, t_star, settings, neurons
    ):
        neighbour = SUBSPACES[s]
        k = _neuron_quantities(neighbour, h_coeffs, shape, settings)
        d = neighbour.derivatives(_take(x, dim, idx), k)[OUTPUT_OF_COEFFICIENT[p]]
        if d is None:
            continue
        contribution = _reduce(_take(g, dim, idx) * d, dim)
        if idx is None:
            grad[:, p] = contribution
        else:
            grad[idx, p] = contribution
    return grad
