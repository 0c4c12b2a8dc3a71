"""Which subspace each neuron is in, and the coefficients its kernel sees.

The rules are derive/spec.py's CLASSIFICATION (the paper's, with two
corrections), rendered for PyTorch as ``deu._generated.classify``:

* |a|, |b| or |c| below epsilon counts as zero; a = b = c = 0 becomes b = epsilon.
* With b = 0 and a, c nonzero, the sign of a*c picks the oscillating or the
  hyperbolic subspace.
* With all three nonzero, |b^2 - 4ac| < epsilon and sign(a) == sign(c) is
  critical damping.  By default ("nearest") the kernel then sees the nearest
  critical equation, c = b^2/(4a) with a and b kept.  ``critical="paper"``
  reproduces the paper's a = |b|/2*sign(a), c = |b|/2*sign(c), which changes the
  function a lot inside the band (its steady state 1/c, for one).  The paper's
  published code also dropped the sign condition; we keep it.
"""

from __future__ import annotations

import torch

from deu._generated import CLASSIFIED, COEFFICIENTS, CRITICAL_RULES, SUBSPACES
from deu._generated.classify import classify as classify_rules

SUBSPACE_NAMES: tuple[str, ...] = tuple(s.name for s in SUBSPACES)
_COLUMNS = tuple(COEFFICIENTS.index(name) for name in CLASSIFIED)


def classify(
    coeffs: torch.Tensor, epsilon: float, critical: str = "nearest"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (effective coefficients (C, 5), subspace index per neuron (C,)).

    ``coeffs`` has columns (a, b, c, c1, c2).  No host synchronisation.
    """
    if critical not in CRITICAL_RULES:
        raise ValueError(f"critical must be one of {CRITICAL_RULES}, got {critical!r}")
    columns = list(coeffs.unbind(1))
    inputs = {name: columns[j] for name, j in zip(CLASSIFIED, _COLUMNS, strict=True)}
    *classified, index = classify_rules(
        **inputs, epsilon=epsilon, critical=CRITICAL_RULES.index(critical)
    )
    for j, column in zip(_COLUMNS, classified, strict=True):
        columns[j] = column
    return torch.stack(columns, dim=1), index


def _shown(neurons: list[int]) -> str:
    return ", ".join(map(str, neurons[:10])) + (", ..." if len(neurons) > 10 else "")


def unclassified_error(coeffs: torch.Tensor, neurons: list[int]) -> ValueError:
    """The error for neurons that no subspace rule takes (index -1 from
    :func:`classify`): b^2 - 4ac is NaN or a*c rounds to zero in the working
    precision. The fused CPU kernel raises the same."""
    a, b, c = (float(v) for v in coeffs[neurons[0], :3])
    return ValueError(
        f"coeffs of neurons {_shown(neurons)} fall in no subspace: in {coeffs.dtype}, "
        f"b^2 - 4ac is NaN or a*c rounds to zero (neuron {neurons[0]}: a, b, c = "
        f"{a:g}, {b:g}, {c:g}); rescale them"
    )


def unclassified_neighbour_error(
    neurons: list[int], first: torch.Tensor, coefficient: int
) -> ValueError:
    """The error for neurons whose outward-gravitation neighbour (``coefficient``
    0, 1 or 2 moved to +-epsilon) falls in no subspace; ``first`` is the first
    neuron's (a, b, c, ...). The fused CPU kernel raises the same."""
    a, b, c = (float(v) for v in first[:3])
    return ValueError(
        f"coeffs of neurons {_shown(neurons)} have a gravitation neighbour "
        f"({'abc'[coefficient]} moved to +-epsilon) that falls in no subspace: in "
        f"{first.dtype}, b^2 - 4ac is NaN or a*c rounds to zero (neuron {neurons[0]}: "
        f"a, b, c = {a:g}, {b:g}, {c:g}); rescale them, change epsilon or pass "
        "gravitation=False"
    )


def check_classified(coeffs: torch.Tensor, index: torch.Tensor) -> None:
    """Raise :func:`unclassified_error` if a neuron has index -1 (a host sync)."""
    bad = torch.nonzero(index < 0).flatten().tolist()
    if bad:
        raise unclassified_error(coeffs, bad)


def subspaces(coeffs: torch.Tensor, epsilon: float = 0.01) -> list[str]:
    """Each neuron's subspace name, as the generated module names them.

    >>> subspaces(torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]]))
    ['a0_b_c0']
    """
    if coeffs.dim() != 2 or coeffs.shape[1] != len(COEFFICIENTS):
        raise ValueError(
            f"coeffs must have shape (num_neurons, {len(COEFFICIENTS)}), got {tuple(coeffs.shape)}"
        )
    _, index = classify(coeffs.detach(), epsilon)
    check_classified(coeffs, index)
    return [SUBSPACE_NAMES[i] for i in index.tolist()]
