"""Which subspace each neuron is in, and the coefficients its kernel sees.

The rules (the paper's, with two corrections noted below):

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

from deu._generated import SUBSPACES

SUBSPACE_NAMES: tuple[str, ...] = tuple(s.name for s in SUBSPACES)
_INDEX = {name: i for i, name in enumerate(SUBSPACE_NAMES)}
CRITICAL_RULES = ("nearest", "paper")


def _where(condition: torch.Tensor, name: str, otherwise: torch.Tensor) -> torch.Tensor:
    return torch.where(condition, torch.full_like(otherwise, _INDEX[name]), otherwise)


def classify(
    coeffs: torch.Tensor, epsilon: float, critical: str = "nearest"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (effective coefficients (C, 5), subspace index per neuron (C,)).

    ``coeffs`` has columns (a, b, c, c1, c2).  No host synchronisation.
    """
    a, b, c = coeffs[:, 0], coeffs[:, 1], coeffs[:, 2]
    za, zb, zc = a.abs() < epsilon, b.abs() < epsilon, c.abs() < epsilon
    all_zero = za & zb & zc
    a = torch.where(za, torch.zeros_like(a), a)
    c = torch.where(zc, torch.zeros_like(c), c)
    b = torch.where(all_zero, torch.full_like(b, epsilon), torch.where(zb, torch.zeros_like(b), b))
    zb = zb & ~all_zero

    disc = b * b - 4 * a * c
    same_sign = torch.sign(a) == torch.sign(c)
    band = ~za & ~zb & ~zc & (disc.abs() < epsilon) & same_sign

    index = torch.full(a.shape, -1, dtype=torch.long, device=a.device)
    index = _where(za & zb & ~zc, "a0_b0_c", index)
    index = _where(za & ~zb & zc, "a0_b_c0", index)
    index = _where(za & ~zb & ~zc, "a0_b_c", index)
    index = _where(~za & zb & zc, "a_b0_c0", index)
    index = _where(~za & zb & ~zc & (a * c > 0), "a_b0_c_pos", index)
    index = _where(~za & zb & ~zc & (a * c < 0), "a_b0_c_neg", index)
    index = _where(~za & ~zb & zc, "a_b_c0", index)
    full = ~za & ~zb & ~zc
    index = _where(full & ~band & (disc > 0), "a_b_c_disc_pos", index)
    index = _where(full & ~band & (disc <= 0), "a_b_c_disc_neg", index)
    index = _where(band, "a_b_c_disc_zero", index)

    if critical == "nearest":
        c = torch.where(band, b * b / (4 * a), c)
    elif critical == "paper":
        half = b.abs() / 2
        a, c = torch.where(band, half * torch.sign(a), a), torch.where(
            band, half * torch.sign(c), c
        )
    else:
        raise ValueError(f"critical must be one of {CRITICAL_RULES}, got {critical!r}")
    effective = torch.stack([a, b, c, coeffs[:, 3], coeffs[:, 4]], dim=1)
    return effective, index


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
    if coeffs.dim() != 2 or coeffs.shape[1] != 5:
        raise ValueError(f"coeffs must have shape (num_neurons, 5), got {tuple(coeffs.shape)}")
    _, index = classify(coeffs.detach(), epsilon)
    check_classified(coeffs, index)
    return [SUBSPACE_NAMES[i] for i in index.tolist()]
