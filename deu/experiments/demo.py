"""``make demo``: a seconds-long tour of DEU.

    python -m deu.experiments.demo [--out DIR]

Trains one hidden layer of two DEUs on the nested noisy circles (the paper's
Figure 1 network, with the paper's random initialisation: from the default ReLU
start two neurons separate the circles on 3 of 5 seeds, see EXPERIMENTS.md),
prints the held-out accuracy and the differential equation
each neuron learned (``DEU.describe()``), and writes under ``--out`` (default
``build/demo``) the decision boundary (``circles_boundary.png``) and the
gallery of DEU subspaces (``gallery/``, the gallery experiment).
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

import torch

import deu
from deu.experiments import circles

__all__ = ["main"]

SEED = 0
EPOCHS = 1500  # about 3 s on one CPU core; seed 0 separates the circles well before
LR = 3e-3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deu.experiments.demo",
        description="Train 2 DEUs on nested circles, print their equations, draw the gallery.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("build") / "demo", help="output folder (build/demo)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: the net is tiny)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    data = circles.make_data(SEED)
    print(
        f"Nested noisy circles: {len(data[0])} training and {len(data[2])} test points; "
        f"network Linear(2, 2) -> DEU(2, init='random') -> Linear(2, 1), {EPOCHS} full-batch "
        "Adam epochs"
    )
    start = time.perf_counter()
    one = circles.train_one("DEU 1x2 (init=random)", SEED, data, epochs=EPOCHS, lr=LR)
    seconds = time.perf_counter() - start
    print(
        f"trained in {seconds:.1f} s: train accuracy {one.train_acc:.3f}, "
        f"test accuracy {one.test_acc:.3f}"
    )
    unit = one.model[1]
    assert isinstance(unit, deu.DEU)
    print("\nthe learned activation of each neuron, a*y'' + b*y' + c*y = u(t):")
    print(unit.describe())

    boundary = circles.plot_boundaries([one], data, out / "circles_boundary.png", columns=1)
    print(f"\ndecision boundary: {boundary}")

    gallery = importlib.import_module("deu.experiments.gallery")
    gallery_out = out / "gallery"
    gallery_out.mkdir(parents=True, exist_ok=True)
    gallery_summary = gallery.run(
        argparse.Namespace(quick=False, out=gallery_out, seed=0, threads=None, data=None)
    )
    print(f"gallery of DEU subspaces: {gallery_out}")
    return {
        "train_acc": one.train_acc,
        "test_acc": one.test_acc,
        "describe": unit.describe(),
        "boundary": str(boundary),
        "gallery": gallery_summary,
        "out": str(out),
    }


if __name__ == "__main__":
    main()
