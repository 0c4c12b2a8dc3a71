"""The launch plan shared by every backend: settings, grouping by subspace, layout.

Neurons are grouped by subspace (one host synchronisation per call, to read the
groups); each group's kernel runs on that group's slice of the input only.
Nothing here imports another part of the operator: the PyTorch path, the
neighbour rule, the C++ glue and the Triton driver all import from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from deu._generated import COEFFICIENTS, SUBSPACES, SUMMED

# Columns of the coefficient matrix (from the generated tables; the names
# _A ... _C2 are for the paper's neighbour rule, which is specific to this ODE).
NUM_COEFFICIENTS = len(COEFFICIENTS)
_A, _B, _C, _C1, _C2 = (COEFFICIENTS.index(name) for name in ("a", "b", "c", "c1", "c2"))
# The gravitation rules a user names, from the generated SUMMED table (one row
# per rule of derive/spec.py); its "off" row is Settings.gravitation for none,
# which a user asks for with gravitation=False.
assert "off" in SUMMED, f"generated gravitation rules {tuple(SUMMED)} lack 'off'"
GRAVITATION_RULES = tuple(rule for rule in SUMMED if rule != "off")


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
    columns = [coeffs[:, j].reshape(shape) for j in range(NUM_COEFFICIENTS)]
    return subspace.neuron(*columns, settings.steepness, settings.max_exponent)


def summed_outputs(subspace: int, settings: Settings) -> tuple[bool, ...]:
    """Which of the outputs dy/d(a, b, c, c1, c2) a backward sums in the subspace
    with index ``subspace``: in a subspace where p is zero, dy/dp is the derived
    gravitation term, used only with that rule (the generated SUMMED table, which
    the fused CPU kernel and the Triton kernels read too)."""
    return SUMMED[settings.gravitation][subspace]


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
