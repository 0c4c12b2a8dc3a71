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
gradient in p would be zero forever.  With gravitation the gradient in p is
taken from the nearest neighbour h that is not singular in p: p = epsilon*sign(p)
(epsilon where p == 0), the other coefficients kept, and h's initial conditions
chosen so that h(t*) = f(t*) and h'(t*) = f'(t*) at t* = the mean of the
neuron's inputs in the batch (value only, where h is of first order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from deu._generated import SUBSPACES
from deu._subspaces import classify

# Columns of the coefficient matrix, and the matching outputs of the kernels
# (output 0 is y, output 1 is dy/dt).
_A, _B, _C, _C1, _C2 = range(5)
_OUTPUT_OF_COEFF = (2, 3, 4, 5, 6)


@dataclass(frozen=True)
class Settings:
    dim: int
    epsilon: float
    steepness: float
    max_value: float
    gravitation: bool
    critical: str
    # "torch" (the generated PyTorch kernels) or "cpp" (the fused CPU kernel).
    backend: str = "torch"


def _groups(index: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """(subspace, neuron indices) for each subspace present; None means all neurons."""
    counts = torch.bincount(index, minlength=len(SUBSPACES)).tolist()  # one host sync
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


def _neuron_quantities(subspace, coeffs: torch.Tensor, shape: list[int], steepness: float):
    columns = [coeffs[:, j].reshape(shape) for j in range(5)]
    return subspace.neuron(*columns, steepness)


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


def _neuron_table(effective: torch.Tensor, groups, steepness: float, width: int) -> torch.Tensor:
    """Every neuron's per-neuron quantities k, zero-padded to ``width`` columns."""
    table = effective.new_zeros(effective.shape[0], width)
    for s, idx in groups:
        group = _take(effective, 0, idx)
        ks = SUBSPACES[s].neuron(*group.unbind(1), steepness)
        block = torch.stack(
            [
                torch.as_tensor(k, dtype=table.dtype, device=table.device).expand(len(group))
                for k in ks
            ],
            dim=1,
        )
        if idx is None:
            table[:, : block.shape[1]] = block
        else:
            table[idx, : block.shape[1]] = block
    return table


def _fused_inputs(x, coeffs, settings):
    from deu import _cpp

    extension = _cpp.load()
    assert extension is not None, "backend 'cpp' requested but the CPU kernel is not built"
    effective, index = classify(coeffs, settings.epsilon, settings.critical)
    groups = _groups(index)
    table = _neuron_table(effective, groups, settings.steepness, extension.max_neuron_quantities)
    return extension, effective, index.to(torch.int32), groups, table


def forward_values(x: torch.Tensor, coeffs: torch.Tensor, settings: Settings) -> torch.Tensor:
    if coeffs.shape[0] == 0:  # no neurons: nothing to compute
        return torch.empty_like(x)
    if settings.backend == "cpp":
        extension, _, subspace, _, table = _fused_inputs(x, coeffs, settings)
        outer, neurons, inner = _flat(x, settings.dim)
        return extension.forward(
            x.contiguous(), table, subspace, outer, neurons, inner, settings.max_value
        )
    effective, index = classify(coeffs, settings.epsilon, settings.critical)
    shape = _neuron_shape(x, settings.dim)
    parts = []
    for s, idx in _groups(index):
        subspace = SUBSPACES[s]
        k = _neuron_quantities(subspace, _take(effective, 0, idx), shape, settings.steepness)
        parts.append((idx, subspace.value(_take(x, settings.dim, idx), k)))
    return _assemble(parts, settings.dim).clamp(-settings.max_value, settings.max_value)


def _evaluate_at(subspace, coeffs: torch.Tensor, t: torch.Tensor, steepness: float):
    """(y, dy/dt) per neuron at one point t per neuron (all shapes (n,))."""
    outputs = subspace.derivatives(t, subspace.neuron(*coeffs.unbind(1), steepness))
    return outputs[0], outputs[1]


def _matched_initial_conditions(
    neighbour,
    coeffs: torch.Tensor,
    t_star: torch.Tensor,
    f: torch.Tensor,
    df: torch.Tensor,
    steepness: float,
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
        return _evaluate_at(neighbour, trial, t_star, steepness)

    h0, dh0 = with_ic(0.0, 0.0)
    h1, dh1 = with_ic(1.0, 0.0)
    h2, dh2 = with_ic(0.0, 1.0)
    m = torch.stack(
        [torch.stack([h1 - h0, h2 - h0], -1), torch.stack([dh1 - dh0, dh2 - dh0], -1)], -2
    )
    rhs = torch.stack([f - h0, df - dh0], -1)
    if neighbour.order < 2:
        # One free constant: match the value only.
        m[:, 1, :] = 0
        rhs[:, 1] = 0
    mt = m.transpose(-1, -2)
    normal = mt @ m
    scale = normal.diagonal(dim1=-2, dim2=-1).sum(-1)
    # A ridge at the dtype's rounding level: no bias beyond rounding when the
    # system is well conditioned, a bounded answer when it is singular.
    info = torch.finfo(m.dtype)
    ridge = (info.eps * scale + info.tiny).reshape(-1, 1, 1)
    eye = torch.eye(2, dtype=m.dtype, device=m.device)
    solution = torch.linalg.solve(normal + ridge * eye, (mt @ rhs.unsqueeze(-1))).squeeze(-1)
    return torch.nan_to_num(solution, nan=0.0, posinf=0.0, neginf=0.0)


def _gravitation(
    subspace,
    coeffs_raw: torch.Tensor,
    effective: torch.Tensor,
    x: torch.Tensor,
    g: torch.Tensor,
    settings: Settings,
) -> torch.Tensor:
    """Gradient (n, 5) contributed by outward gravitation for one group's neurons."""
    dim, eps = settings.dim, settings.epsilon
    n = effective.shape[0]
    grad = torch.zeros(n, 5, dtype=x.dtype, device=x.device)
    singular = [p for p, zero in zip((_A, _B, _C), subspace.zero, strict=True) if zero]
    if not singular:
        return grad
    shape = _neuron_shape(x, dim)
    axes = [d for d in range(x.dim()) if d != dim]
    t_star = torch.nanmean(x, dim=axes) if axes else x
    t_star = torch.nan_to_num(t_star)
    f, df = _evaluate_at(subspace, effective, t_star, settings.steepness)
    for p in singular:
        moved = effective.clone()
        raw = coeffs_raw[:, p]
        # The sign as a tensor of the coefficients' dtype: a float32 eps written
        # into float64 would round below eps and stay singular.
        moved[:, p] = eps * torch.where(raw < 0, -1.0, 1.0).to(moved)
        moved_eff, neighbour_index = classify(moved, eps, settings.critical)
        for s, idx in _groups(neighbour_index):
            neighbour = SUBSPACES[s]
            h_coeffs = _take(moved_eff, 0, idx).clone()
            initial = _matched_initial_conditions(
                neighbour,
                h_coeffs,
                _take(t_star, 0, idx),
                _take(f, 0, idx),
                _take(df, 0, idx),
                settings.steepness,
            )
            h_coeffs[:, _C1], h_coeffs[:, _C2] = initial[:, 0], initial[:, 1]
            k = _neuron_quantities(neighbour, h_coeffs, shape, settings.steepness)
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
    dim = settings.dim
    effective, index = classify(coeffs, settings.epsilon, settings.critical)
    shape = _neuron_shape(x, dim)
    input_parts, coeff_parts = [], []
    for s, idx in _groups(index):
        subspace = SUBSPACES[s]
        group_coeffs = _take(effective, 0, idx)
        k = _neuron_quantities(subspace, group_coeffs, shape, settings.steepness)
        xs = _take(x, dim, idx)
        outputs = subspace.derivatives(xs, k)
        # The output clamp passes no gradient where it is active.
        gs = _take(g, dim, idx) * (outputs[0].abs() <= settings.max_value).to(g.dtype)
        if need_input:
            input_parts.append((idx, gs * outputs[1]))
        if not need_coeffs:
            continue
        columns = [
            _reduce(gs * d, dim) if d is not None else torch.zeros_like(group_coeffs[:, 0])
            for d in (outputs[o] for o in _OUTPUT_OF_COEFF)
        ]
        group_grad = torch.stack(columns, dim=1)
        if settings.gravitation:
            group_grad = group_grad + _gravitation(
                subspace, _take(coeffs, 0, idx), group_coeffs, xs, gs, settings
            )
        coeff_parts.append((idx, group_grad))
    nothing = x.new_empty(0)
    return (
        _assemble(input_parts, dim) if need_input else nothing,
        _assemble(coeff_parts, 0) if need_coeffs else nothing,
    )


def _fused_backward(x, coeffs, g, settings, need_input, need_coeffs):
    """The fused CPU kernel for f's own gradients; gravitation from the PyTorch kernels."""
    dim = settings.dim
    extension, effective, subspace, groups, table = _fused_inputs(x, coeffs, settings)
    outer, neurons, inner = _flat(x, dim)
    x, g = x.contiguous(), g.contiguous()
    grad_x, grad_coeffs = extension.backward(
        x, g, table, subspace, outer, neurons, inner, settings.max_value, need_input
    )
    if need_coeffs and settings.gravitation:
        shape = _neuron_shape(x, dim)
        for s, idx in groups:
            sub = SUBSPACES[s]
            if not any(sub.zero):
                continue
            group_coeffs = _take(effective, 0, idx)
            xs = _take(x, dim, idx)
            y = sub.value(xs, _neuron_quantities(sub, group_coeffs, shape, settings.steepness))
            gs = _take(g, dim, idx) * (y.abs() <= settings.max_value).to(g.dtype)
            extra = _gravitation(sub, _take(coeffs, 0, idx), group_coeffs, xs, gs, settings)
            if idx is None:
                grad_coeffs = grad_coeffs + extra
            else:
                grad_coeffs.index_add_(0, idx, extra)
    return grad_x, grad_coeffs if need_coeffs else x.new_empty(0)


def _in_layout_of(result: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """result with reference's memory layout, as the operators' fake kernels promise.

    torch.compile plans strides from the fake kernels (torch.empty_like of the
    input): a channels-last or permuted input must get an output laid out alike.
    """
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
    max_value: float,
    gravitation: bool,
    critical: str,
    backend: str,
) -> torch.Tensor:
    _check_finite(coeffs)
    settings = Settings(dim, epsilon, steepness, max_value, gravitation, critical, backend)
    return _in_layout_of(forward_values(x, coeffs, settings), x)


@deu_forward.register_fake
def _(x, coeffs, dim, epsilon, steepness, max_value, gravitation, critical, backend):
    return torch.empty_like(x)


@torch.library.custom_op("deu::backward", mutates_args=())
def deu_backward(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    grad_output: torch.Tensor,
    dim: int,
    epsilon: float,
    steepness: float,
    max_value: float,
    gravitation: bool,
    critical: str,
    backend: str,
    need_input: bool,
    need_coeffs: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    settings = Settings(dim, epsilon, steepness, max_value, gravitation, critical, backend)
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
