"""The operator's values and gradients: each backend's entry, and the PyTorch path.

Forward: the generated ``value`` kernel per subspace group (``deu._plan``).
Backward: the same grouping, the generated ``derivatives`` kernel recomputed
from the saved input and per-neuron coefficients (nothing per-element is
saved), then

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
* "neighbour" (the paper's): ``deu._neighbour``.

The fused CPU kernel is called through ``deu._cpp``; the Triton kernels through
``deu._triton``, imported only when used (triton is optional).
"""

from __future__ import annotations

import torch

from deu import _cpp
from deu._generated import OUTPUT_OF_COEFFICIENT, SUBSPACES
from deu._neighbour import _gravitation
from deu._plan import (
    Settings,
    _assemble,
    _groups,
    _neuron_quantities,
    _neuron_shape,
    _reduce,
    _take,
    summed_outputs,
)
from deu._subspaces import classify, unclassified_error


def forward_values(x: torch.Tensor, coeffs: torch.Tensor, settings: Settings) -> torch.Tensor:
    if coeffs.shape[0] == 0:  # no neurons: nothing to compute
        return torch.empty_like(x)
    if settings.backend == "cpp":
        return _cpp.forward(x, coeffs, settings)
    if settings.backend == "triton":
        from deu import _triton

        y = _triton.forward(x.contiguous(), coeffs, settings)
        if y is not None:  # None: the kernels failed (warned once); the PyTorch path runs
            return y
    return torch_forward(x, coeffs, settings)


def torch_forward(
    x: torch.Tensor, coeffs: torch.Tensor, settings: Settings, groups: list | None = None
) -> torch.Tensor:
    """The PyTorch path's forward. ``groups`` (``deu._plan._groups`` of the
    classification) can be given, read once from the coefficients, so that the
    function has no host synchronisation (the benchmark's in-operator compiled
    comparison)."""
    effective, index = classify(coeffs, settings.epsilon, settings.critical)
    if groups is None:
        groups = _groups(index, lambda bad: unclassified_error(coeffs, bad))
    shape = _neuron_shape(x, settings.dim)
    parts = []
    for s, idx in groups:
        subspace = SUBSPACES[s]
        k = _neuron_quantities(subspace, _take(effective, 0, idx), shape, settings)
        parts.append((idx, subspace.value(_take(x, settings.dim, idx), k)))
    return _assemble(parts, settings.dim).clamp(-settings.max_value, settings.max_value)


def backward_values(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    g: torch.Tensor,
    settings: Settings,
    need_input: bool,
    need_coeffs: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad of x, grad of coeffs) for the output gradient g; empty where not needed."""
    if coeffs.shape[0] == 0:
        nothing = x.new_empty(0)
        return (torch.zeros_like(x) if need_input else nothing), (
            torch.zeros_like(coeffs) if need_coeffs else nothing
        )
    if settings.backend == "cpp":
        return _cpp.backward(x, coeffs, g, settings, need_input, need_coeffs)
    if settings.backend == "triton":
        from deu import _triton

        grads = _triton.backward(
            x.contiguous(), coeffs, g.contiguous(), settings, need_input, need_coeffs
        )
        if grads is not None:  # None: the kernels failed (warned once); the PyTorch path runs
            return grads
    return torch_backward(x, coeffs, g, settings, need_input, need_coeffs)


def torch_backward(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    g: torch.Tensor,
    settings: Settings,
    need_input: bool,
    need_coeffs: bool,
    groups: list | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch path's backward; ``groups`` as for :func:`torch_forward`."""
    dim = settings.dim
    effective, index = classify(coeffs, settings.epsilon, settings.critical)
    if groups is None:
        groups = _groups(index, lambda bad: unclassified_error(coeffs, bad))
    shape = _neuron_shape(x, dim)
    input_parts, coeff_parts = [], []
    for s, idx in groups:
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
        summed = summed_outputs(s, settings)
        columns = [
            _reduce(gs * d, dim) if d is not None and use else torch.zeros_like(group_coeffs[:, 0])
            for d, use in zip((outputs[o] for o in OUTPUT_OF_COEFFICIENT), summed, strict=True)
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
