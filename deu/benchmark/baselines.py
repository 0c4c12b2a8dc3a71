"""Baselines: the same function as deu.functional.deu(..., gravitation=False),
computed the ways the paper describes, with autograd through ordinary torch ops."""

from __future__ import annotations

from typing import Any

import torch

from deu import functional
from deu._generated import SUBSPACES
from deu._subspaces import classify
from deu.benchmark.populations import INSIDE_POINTS

# The runtime's defaults (epsilon, steepness, max_value, critical, ...), which the
# baselines share so that they compute the same function.
# The functional form's keyword defaults (epsilon, critical, max_value, ...).
DEFAULTS: dict[str, Any] = dict(functional.deu.__kwdefaults__ or {})


def _neuron_axis_shape(x: torch.Tensor, dim: int) -> list[int]:
    """Shape that broadcasts a per-neuron vector against ``x`` along ``dim``."""
    return [-1] + [1] * (x.dim() - dim % x.dim() - 1)


def _effective_coefficients(coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(coefficients the kernels see, subspace index per neuron).

    The runtime's classification; the gradient passes straight through to the
    raw coefficients, as the runtime's does (a coefficient that counts as zero
    gets no gradient because its kernel does not read it).
    """
    effective, index = classify(coeffs.detach(), DEFAULTS["epsilon"], DEFAULTS["critical"])
    return coeffs + (effective - coeffs).detach(), index


def _clamp(y: torch.Tensor) -> torch.Tensor:
    return y.clamp(-DEFAULTS["max_value"], DEFAULTS["max_value"])


def masked_every_subspace(x: torch.Tensor, coeffs: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
    """The paper's Algorithm 1: every present subspace's closed form on every element.

    For each subspace S with at least one neuron: ``output += mask_S * f_S(x)``,
    with f_S evaluated over the whole input for every neuron, ignoring whether
    the neuron is in S.  To keep the lanes of neurons outside S finite (and
    their gradients free of 0 * inf), those neurons' coefficients are replaced
    by a point inside S before f_S is evaluated; the per-element work is
    unchanged.  The backward pass is autograd's through all of it.
    """
    effective, index = _effective_coefficients(coeffs)
    shape = _neuron_axis_shape(x, dim)
    output = torch.zeros_like(x)
    for s, subspace in enumerate(SUBSPACES):
        mask = index == s
        if not bool(mask.any()):  # Algorithm 1, line 5 (one host sync per subspace)
            continue
        inside = torch.tensor(
            (*INSIDE_POINTS[subspace.name], 0.0, 0.0), dtype=coeffs.dtype, device=coeffs.device
        )
        lanes = torch.where(mask.unsqueeze(1), effective, inside)
        k = subspace.neuron(
            *(lanes[:, j].reshape(shape) for j in range(5)),
            DEFAULTS["steepness"],
            DEFAULTS["max_exponent"],
        )
        output = output + mask.to(x.dtype).reshape(shape) * subspace.value(x, k)
    return _clamp(output)


def per_neuron_loop(x: torch.Tensor, coeffs: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
    """The direct way the paper describes, "iterating over all neurons and computing
    the corresponding activation values individually": a Python loop.

    Each neuron's subspace is chosen on the host and its closed form is
    evaluated on its own slice of the input, with the per-neuron quantities
    computed from that neuron's (0-d) coefficient tensors; the slices are
    stacked back.  The backward pass is autograd's through the whole loop.
    The classification itself runs once, vectorised, which favours this
    baseline.
    """
    effective, index = _effective_coefficients(coeffs)
    columns = []
    for i, s in enumerate(index.tolist()):
        subspace = SUBSPACES[s]
        k = subspace.neuron(*effective[i].unbind(), DEFAULTS["steepness"], DEFAULTS["max_exponent"])
        columns.append(subspace.value(x.select(dim, i), k))
    return _clamp(torch.stack(columns, dim=dim))
