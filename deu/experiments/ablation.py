"""Ablation: each candidate fix for DEU training stability measured on its own.

The models, runs and columns of :mod:`deu.experiments.stability`, for DEU
variants only, on a shorter grid (Adam at 1e-3 and 1e-2, AdamW at 3e-3, SGD with
momentum at 0.03 and 0.1; 3 seeds): the paper's rules; the default model; and
the default with one setting changed at a time: the coefficient scale (the
equalised step size), the exponent cap (``max_exponent``) from the paper's 14
down to 2, the gravitation rule, the initialisation. ReLU is the reference row.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

import deu
from deu.experiments._common import write_table
from deu.experiments.stability import SEEDS, grid, per_setting_table, summary_table, tasks


def _deu(**settings) -> Callable[[int], nn.Module]:
    return lambda width: deu.DEU(width, **settings)


VARIANTS: dict[str, Callable[[int], nn.Module]] = {
    "ReLU": lambda width: nn.ReLU(),
    "paper (scale 1, max_exponent 14, neighbour, critical paper)": _deu(paper=True),
    "paper, gravitation off": _deu(paper=True, gravitation=False),
    "paper, coefficient_scale 0.1": _deu(paper=True, coefficient_scale=0.1),
    "default (scale 0.1, max_exponent 4, derived)": _deu(),
    "default, coefficient_scale 1": _deu(coefficient_scale=1.0),
    "default, coefficient_scale 0.3": _deu(coefficient_scale=0.3),
    "default, max_exponent 14": _deu(max_exponent=14.0),
    "default, max_exponent 8": _deu(max_exponent=8.0),
    "default, max_exponent 2": _deu(max_exponent=2.0),
    "default, gravitation neighbour": _deu(gravitation="neighbour"),
    "default, gravitation off": _deu(gravitation=False),
    "default, init relu": _deu(init="relu"),
    "default, scale 1, max_exponent 14 (cap and scale both off)": _deu(
        coefficient_scale=1.0, max_exponent=14.0
    ),
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
