"""Ablation: each candidate fix for DEU training stability measured on its own.

The models, runs and columns of :mod:`deu.experiments.stability`, for DEU
variants only, on a shorter grid (Adam at 1e-3 and 1e-2, AdamW at 3e-3, SGD with
momentum at 0.03 and 0.1; 3 seeds): the paper's rules, the exponent cap
(``max_exponent``) from the paper's 14 down to 2, the two gravitation rules and
none, a ReLU initialisation, and coefficients stored as 0.1 * a raw parameter
(an equalised step size, which the module does not have: measured here with a
wrapper, :class:`ScaledCoefficients`). ReLU is the reference row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import deu
from deu import functional as F
from deu.experiments._common import write_table
from deu.experiments.stability import SEEDS, grid, per_setting_table, summary_table, tasks


class ScaledCoefficients(nn.Module):
    """A default DEU whose coefficients are ``scale * raw``, ``raw`` the parameter:
    an optimiser's step in raw moves the coefficients ``scale`` times as far
    (Adam), or ``scale**2`` times (SGD)."""

    def __init__(self, width: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.raw = nn.Parameter(deu.DEU(width).coeffs.detach() / scale)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.deu(input, self.raw * self.scale)


VARIANTS: dict[str, Callable[[int], nn.Module]] = {
    "ReLU": lambda width: nn.ReLU(),
    "paper (max_exponent 14, critical paper)": lambda width: deu.DEU(width, paper=True),
    "paper, gravitation off": lambda width: deu.DEU(width, paper=True, gravitation=False),
    "max_exponent 14": lambda width: deu.DEU(width, max_exponent=14.0),
    "max_exponent 8": lambda width: deu.DEU(width, max_exponent=8.0),
    "max_exponent 6": lambda width: deu.DEU(width, max_exponent=6.0),
    "default (max_exponent 4)": lambda width: deu.DEU(width),
    "max_exponent 3": lambda width: deu.DEU(width, max_exponent=3.0),
    "max_exponent 2": lambda width: deu.DEU(width, max_exponent=2.0),
    "default, gravitation off": lambda width: deu.DEU(width, gravitation=False),
    "default, gravitation neighbour": lambda width: deu.DEU(width, gravitation="neighbour"),
    "default, coefficients 0.1 * raw": lambda width: ScaledCoefficients(width, 0.1),
    "default, init relu": lambda width: deu.DEU(width, init="relu"),
    "paper, init relu": lambda width: deu.DEU(width, paper=True, init="relu"),
}
OPTIMISERS = (("Adam", 1e-3), ("Adam", 1e-2), ("AdamW", 3e-3), ("SGD", 0.03), ("SGD", 0.1))


def run(args) -> dict:
    tasks_ = tasks(args.quick)
    variants = dict(list(VARIANTS.items())[:3]) if args.quick else VARIANTS
    optimisers = OPTIMISERS[:1] if args.quick else OPTIMISERS
    runs = grid(tasks_, variants, optimisers, 1 if args.quick else SEEDS, args.seed, "ablation")
    write_table(args.out, "ablation_runs", runs, floatfmt=".4g")
    write_table(args.out, "ablation_settings", per_setting_table(runs), "Every setting")
    summary = summary_table(runs)
    text = write_table(args.out, "ablation", summary, "Each candidate on its own")
    print(text)
    return {"runs": runs, "summary": summary}
