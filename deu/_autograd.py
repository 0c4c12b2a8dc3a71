"""The DEU operator: grouped forward, recomputing backward, gravitation.

Forward: neurons are grouped by subspace (one host synchronisation per call, to
read the groups); each group's kernel runs on that group's slice of the input
only.  Backward: the same grouping, the generated ``derivatives`` kernel
recomputed from the saved input and per-neuron coefficients (nothing
per-element is saved), then

    grad_input  = g * dy/dt
    grad_coeffs = sum over every axis but the neuron axis of g * dy/d(a, b, c, c1, c2)

Outward gravitation (the paper's "escape" from a singular subspace): for a
neuron with |p| < epsilon for p in (a, b, c), y does not depend on p, so its
gradient in p would be zero forever.  Two rules give it one:

* "derived" (the default): the generated kernels' dy/dp output in that
  subspace, z_p, the first-order change of the solution with p's term added
  to the ODE (derive/gravitation.py): the exact derivative at p = 0 where
  that keeps the ODE's order, the outer perturbation term where it raises it.
  Computed in the same pass as the other gradients.
* "neighbour" (the paper's): the gradient in p of the nearest neighbour h that
  is not singular in p: p = epsilon*sign(p) (epsilon where p == 0), the other
  coefficients kept, and h's initial conditions chosen so that h(t*) = f(t*)
  and h'(t*) = f'(t*) at t* = the mean of the neuron's inputs in the batch
  (value only, where h is of first order).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from deu._generated import SUBSPACES
from deu._subspaces import classify, unclassified_error, unclassified_neighbour_error

# Columns of the coefficient matrix, and the matching outputs of the kernels
# (output 0 is y, output 1 is dy/dt).
_A, _B, _C, _C1, _C2 = range(5)
_OUTPUT_OF_COEFF = (2, 3, 4, 5, 6)
# The gravitation rules (Settings.gravitation), "off" for none.
GRAVITATION_RULES = ("derived", "neighbour")


@dataclass(frozen=True)
class Settings:
    dim: int
    epsilon: float
    steepness: float
    # The cap on every exponent of the formulas (the kernels' max_exponent input).
    max_exponent: float
    max_value: float
    # "derived", "neighbour" or "off" (see the module docstring).
    gravitation: str
    critical: str
    # "torch" (the generated PyTorch kernels), "cpp" (the fused CPU kernel) or
    # "triton" (deu/_triton.py).
    backend: str = "torch"


def _groups(
    index: torch.Tensor, unclassified: Callable[[list[int]], Exception]
) -> list[tuple[int, torch.Tensor | None]]:
    """(subspace, neuron indices) for each subspace present; None means all neurons.

    Neurons that fall in no subspace (index -1) raise ``unclassified(their indices)``.
    """
    # Index -1 counts at 0: one host sync, as before.
    counts = torch.bincount(index + 1, minlength=len(SUBSPACES) + 1).tolist()
    if counts[0]:
        raise unclassified(torch.nonzero(index < 0).flatten().tolist())
    counts = counts[1:]
    present = [s for s, n in enumerate(counts) if n]
    if len(present) == 1:
        return [(present[0], None)]
    # Neurons sorted by subspace (stable, so each group stays in neuron order).
    order = torch.sort(index, stable=True).indices
    pieces = order.split([counts[s] for s in range(len(counts))])
    return [(s, pieces[s]) for s in present]


def _neuron_shape(x: torch.Tensor, dim: int) -> list[int]:
    return [-1] + [1] * (x.dim() - dim - 1)


def _take(x: torch.Tensor, dim: int, idx: torch.Tensor | None) -> torch.Tensor:
    return x if idx is None else x.index_select(dim, idx)


def _neuron_quantities(subspace, coeffs: torch.Tensor, shape: list[int], settings: Settings):
    columns = [coeffs[:, j].reshape(shape) for j in range(5)]
    return subspace.neuron(*columns, settings.steepness, settings.max_exponent)


def summed_outputs(subspace, settings: Settings) -> tuple[bool, ...]:
    """Which of the outputs dy/d(a, b, c, c1, c2) a backward sums: in a subspace
    where p is zero, dy/dp is the derived gravitation term, used only with that
    rule. (The fused CPU kernel applies the same rule in C++.)"""
    derived = settings.gravitation == "derived"
    return (*(derived or not zero for zero in subspace.zero), True, True)


def _reduce(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over every axis but ``dim``."""
    axes = [d for d in range(values.dim()) if d != dim]
    return values.sum(dim=axes) if axes else values


def _assemble(parts: list[tuple[torch.Tensor | None, torch.Tensor]], dim: int) -> torch.Tensor:
    """Put each group's result at its neurons' places along ``dim``."""
    if len(parts) == 1 and parts[0][0] is None:
        return parts[0][1]
    first = parts[0][1]
    shape = list(first.shape)
    shape[dim] = sum(part.shape[dim] for _, part in parts)
    out = first.new_empty(shape)
    for idx, part in parts:
        assert idx is not None
        out.index_copy_(dim, idx, part)
    return out


def _flat(x: torch.Tensor, dim: int) -> tuple[int, int, int]:
    """x as (outer, neurons, inner)."""
    return math.prod(x.shape[:dim]), x.shape[dim], math.prod(x.shape[dim + 1 :])


def _kernel_arguments(x: torch.Tensor, settings: Settings) -> tuple:
    """The fused kernel's (outer, neurons, inner, epsilon, steepness, max_exponent,
    max_value, critical_paper), shared by its forward and backward."""
    return (
        *_flat(x, settings.dim),
        settings.epsilon,
        settings.steepness,
        settings.max_exponent,
        settings.max_value,
        settings.critical == "paper",
    )


def forward_values(x: torch.Tensor, coeffs: torch.Tensor, settings: Settings) -> torch.Tensor:
    if coeffs.shape[0] == 0:  # no neurons: nothing to compute
        return torch.empty_like(x)
    if settings.backend == "cpp":
        return _extension().forward(
            x.contiguous(), coeffs.contiguous(), *_kernel_arguments(x, settings)
        )
    if settings.backend == "triton":
        from deu import _triton

        y = _triton.forward(x.contiguous(), coeffs, settings)
        if y is not None:  # None: the kernels failed (warned once); the PyTorch path runs
            return y
    effective, index = classify(coeffs, settings.epsilon, settings.critical)
    shape = _neuron_shape(x, settings.dim)
    parts = []
    for s, idx in _groups(index, lambda bad: unclassified_error(coeffs, bad)):
        subspace = SUBSPACES[s]
        k = _neuron_quantities(subspace, _take(effective, 0, idx), shape, settings)
        parts.append((idx, subspace.value(_take(x, settings.dim, idx), k)))
    return _assemble(parts, settings.dim).clamp(-settings.max_value, settings.max_value)


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
    grad = torch.zeros(effective.shape[0], 5, dtype=x.dtype, device=x.device)
    if not any(subspace.zero):
        return grad
    shape = _neuron_shape(x, dim)
    t_star = _mean_input(x, dim)
    for p, s, idx, h_coeffs in _neighbours(
        subspace, coeffs_raw, effective, t_star, settings, neurons
    ):
        neighbour = SUBSPACES[s]
        k = _neuron_quantities(neighbour, h_coeffs, shape, settings)
        d = neighbour.derivatives(_take(x, dim, idx), k)[_OUTPUT_OF_COEFF[p]]
        if d is None:
            continue
        contribution = _reduce(_take(g, dim, idx) * d, dim)
        if idx is None:
            grad[:, p] = contribution
        else:
            grad[idx, p] = contribution
    return grad


def backward_values(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    g: torch.Tensor,
    settings: Settings,
    need_input: bool = True,
    need_coeffs: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad of x, grad of coeffs) for the output gradient g; empty where not needed."""
    if coeffs.shape[0] == 0:
        nothing = x.new_empty(0)
        return (torch.zeros_like(x) if need_input else nothing), (
            torch.zeros_like(coeffs) if need_coeffs else nothing
        )
    if settings.backend == "cpp":
        return _fused_backward(x, coeffs, g, settings, need_input, need_coeffs)
    if settings.backend == "triton":
        from deu import _triton

        grads = _triton.backward(
            x.contiguous(), coeffs, g.contiguous(), settings, need_input, need_coeffs
        )
        if grads is not None:  # None: the kernels failed (warned once); the PyTorch path runs
            return grads
    dim = settings.dim
    effective, index = classify(coeffs, settings.epsilon, settings.critical)
    shape = _neuron_shape(x, dim)
    input_parts, coeff_parts = [], []
    for s, idx in _groups(index, lambda bad: unclassified_error(coeffs, bad)):
        subspace = SUBSPACES[s]
        group_coeffs = _take(effective, 0, idx)
        k = _neuron_quantities(subspace, group_coeffs, shape, settings)
        xs = _take(x, dim, idx)
        outputs = subspace.derivatives(xs, k)
        # The output clamp passes no gradient where it is active.
        gs = _take(g, dim, idx) * (outputs[0].abs() <= settings.max_value).to(g.dtype)
        if need_input:
            input_parts.append((idx, gs * outputs[1]))
        if not need_coeffs:
            continue
        summed = summed_outputs(subspace, settings)
        columns = [
            _reduce(gs * d, dim) if d is not None and use else torch.zeros_like(group_coeffs[:, 0])
            for d, use in zip((outputs[o] for o in _OUTPUT_OF_COEFF), summed, strict=True)
        ]
        group_grad = torch.stack(columns, dim=1)
        if settings.gravitation == "neighbour":
            group_grad = group_grad + _gravitation(
                subspace, _take(coeffs, 0, idx), group_coeffs, xs, gs, settings, idx
            )
        coeff_parts.append((idx, group_grad))
    nothing = x.new_empty(0)
    return (
        _assemble(input_parts, dim) if need_input else nothing,
        _assemble(coeff_parts, 0) if need_coeffs else nothing,
    )


def _extension():
    from deu import _cpp

    extension = _cpp.load()
    if extension is None:  # only reachable through a graph exported where it built
        raise RuntimeError(
            "deu: this call was traced with backend 'cpp', but the fused CPU kernel "
            "cannot be built here (see the warning above); trace it with backend='torch'"
        )
    return extension


def _fused_backward(x, coeffs, g, settings, need_input, need_coeffs):
    """The fused CPU kernel: f's own gradients and gravitation, all in C++."""
    # Empty tensors come back for the gradients that are not needed.
    grad_x, grad_coeffs = _extension().backward(
        x.contiguous(),
        g.contiguous(),
        coeffs.contiguous(),
        *_kernel_arguments(x, settings),
        settings.gravitation == "neighbour",
        settings.gravitation == "derived",
        need_input,
        need_coeffs,
    )
    return grad_x, grad_coeffs


def _in_layout_of(result: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """result with reference's memory layout, as the operators' fake kernels promise.

    torch.compile plans strides from the fake kernels (torch.empty_like of the
    input): a channels-last or permuted input must get an output laid out alike.
    """
    if result.stride() == reference.stride():
        # The kernels' results are dense, so the reference is dense too, and
        # empty_like keeps a dense tensor's strides: nothing to allocate.
        return result
    target = torch.empty_like(reference)
    if result.stride() == target.stride():
        return result
    return target.copy_(result)


def _check_finite(coeffs: torch.Tensor) -> None:
    finite = torch.isfinite(coeffs).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(f"coeffs must be finite; neurons {shown} have non-finite coefficients")


# The activation as a PyTorch custom operator: torch.compile and torch.export see
# one opaque op with a known output shape (no graph break at the host
# synchronisation that reads the subspace groups), and autograd is registered on it.


@torch.library.custom_op("deu::forward", mutates_args=())
def deu_forward(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    dim: int,
    epsilon: float,
    steepness: float,
    max_exponent: float,
    max_value: float,
    gravitation: str,
    critical: str,
    backend: str,
) -> torch.Tensor:
    if backend != "cpp":  # the fused kernel checks them itself, in one pass
        _check_finite(coeffs)
    settings = Settings(
        dim, epsilon, steepness, max_exponent, max_value, gravitation, critical, backend
    )
    return _in_layout_of(forward_values(x, coeffs, settings), x)


@deu_forward.register_fake
def _(x, coeffs, dim, epsilon, steepness, max_exponent, max_value, gravitation, critical, backend):
    return torch.empty_like(x)


@torch.library.custom_op("deu::backward", mutates_args=())
def deu_backward(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    grad_output: torch.Tensor,
    dim: int,
    epsilon: float,
    steepness: float,
    max_exponent: float,
    max_value: float,
    gravitation: str,
    critical: str,
    backend: str,
    need_input: bool,
    need_coeffs: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    settings = Settings(
        dim, epsilon, steepness, max_exponent, max_value, gravitation, critical, backend
    )
    grad_x, grad_coeffs = backward_values(
        x, coeffs, grad_output.contiguous(), settings, need_input, need_coeffs
    )
    return (
        _in_layout_of(grad_x, x) if need_input else grad_x,
        _in_layout_of(grad_coeffs, coeffs) if need_coeffs else grad_coeffs,
    )


@deu_backward.register_fake
def _(
    x,
    coeffs,
    grad_output,
    dim,
    epsilon,
    steepness,
    max_exponent,
    max_value,
    gravitation,
    critical,
    backend,
    need_input,
    need_coeffs,
):
    nothing = x.new_empty(0)
    return (
        torch.empty_like(x) if need_input else nothing,
        torch.empty_like(coeffs) if need_coeffs else nothing,
    )


def _setup_context(ctx, inputs, output) -> None:
    x, coeffs, *settings = inputs
    ctx.save_for_backward(x, coeffs)
    ctx.settings = settings


def _backward(ctx, grad_output):
    x, coeffs = ctx.saved_tensors
    need_input, need_coeffs = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_x, grad_coeffs = deu_backward(
        x, coeffs, grad_output, *ctx.settings, need_input, need_coeffs
    )
    # Only x and coeffs are differentiable; the settings get None.
    return (
        grad_x if need_input else None,
        grad_coeffs if need_coeffs else None,
        *(None,) * len(ctx.settings),
    )


deu_forward.register_autograd(_backward, setup_context=_setup_context)


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "deu: the activation is differentiable once; a second derivative (backward "
        "through its gradient, e.g. after autograd.grad(..., create_graph=True)) is "
        "not supported"
    )


deu_backward.register_autograd(_no_double_backward, setup_context=lambda ctx, inputs, output: None)
