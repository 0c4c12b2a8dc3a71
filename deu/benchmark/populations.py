"""Populations of neurons: each subspace alone, and the issue's mixed population."""

from __future__ import annotations

import math

import torch

from deu._subspaces import SUBSPACE_NAMES

# One point well inside each subspace, as (a, b, c).  Populations are drawn
# around them (+-5%), and the masked baseline evaluates them in the lanes of
# neurons outside a subspace.
INSIDE_POINTS: dict[str, tuple[float, float, float]] = {
    "a0_b0_c": (0.0, 0.0, 1.0),
    "a0_b_c0": (0.0, 1.0, 0.0),
    "a0_b_c": (0.0, 1.0, 1.0),
    "a_b0_c0": (1.0, 0.0, 0.0),
    "a_b0_c_pos": (1.0, 0.0, 1.0),
    "a_b0_c_neg": (1.0, 0.0, -1.0),
    "a_b_c0": (1.0, 1.0, 0.0),
    "a_b_c_disc_pos": (0.5, 2.0, 0.5),
    "a_b_c_disc_zero": (1.0, 2.0, 1.0),
    "a_b_c_disc_neg": (1.0, 0.5, 1.0),
}

# The mixed population of the issue: 40% damped oscillation, 20% overdamped,
# 10% ReLU-like (a = c = 0), 10% undamped oscillation (b = 0), 10% first order
# (a = 0), and the remaining 10% shared equally by the other five subspaces.
_MAIN_SHARES = {
    "a_b_c_disc_neg": 0.4,
    "a_b_c_disc_pos": 0.2,
    "a0_b_c0": 0.1,
    "a_b0_c_pos": 0.1,
    "a0_b_c": 0.1,
}
_OTHERS = [name for name in SUBSPACE_NAMES if name not in _MAIN_SHARES]
MIXED_PROPORTIONS: dict[str, float] = {
    name: _MAIN_SHARES.get(name, 0.1 / len(_OTHERS)) for name in SUBSPACE_NAMES
}


def subspace_population(
    name: str, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(n, 5)`` float64 coefficients of n neurons in subspace ``name``.

    (a, b, c) are the subspace's inside point scaled by 1 +- 5% per neuron
    (critically damped ones put back on b^2 = 4ac); c1, c2 are uniform in
    [-0.5, 0.5].
    """
    base = torch.tensor(INSIDE_POINTS[name], dtype=torch.float64)
    jitter = torch.rand(n, 3, generator=generator, dtype=torch.float64) - 0.5
    abc = base * (1 + 0.1 * jitter)
    if name == "a_b_c_disc_zero":
        abc[:, 2] = abc[:, 1] ** 2 / (4 * abc[:, 0])
    initial = torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5
    return torch.cat([abc, initial], dim=1)


def neuron_counts(n: int, proportions: dict[str, float]) -> dict[str, int]:
    """Split n neurons by ``proportions`` (largest remainder: each count is
    within one neuron of its exact share, and the counts sum to n)."""
    exact = {name: share * n for name, share in proportions.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: counts[name] - exact[name])
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    return counts


def mixed_population(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 5)`` float64 coefficients in :data:`MIXED_PROPORTIONS`, neurons
    of different subspaces interleaved in random order."""
    counts = neuron_counts(n, MIXED_PROPORTIONS)
    coeffs = torch.cat([subspace_population(name, k, generator) for name, k in counts.items()])
    return coeffs[torch.randperm(n, generator=generator)]
