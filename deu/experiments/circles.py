"""Nested noisy circles (the paper's Figure 1): 2 DEUs versus Maxout and ReLU nets.

The paper: "For using ReLU, we needed at least two layers of four hidden units
to separate the circles, while one layer of either two Maxout or two DEUs is
enough to learn an appropriate decision boundary."

Data: ``sklearn.datasets.make_circles(500, factor=0.5, noise=0.05)``, a
stratified 70/30 train/test split; every seed draws its own sample and its own
initial weights. Every network has one logit output (binary cross-entropy) and
is trained full-batch with Adam at the same learning rate. We report held-out
accuracy over the seeds (mean, min, max, and how many runs separate the test
set, accuracy >= 0.95) and draw the decision boundaries of the first seed and
of every run of the first five seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import deu
from deu.experiments._common import (
    Maxout,
    count_parameters,
    pyplot,
    save_figure,
    seed_everything,
    setup,
    train,
    write_table,
)

__all__ = [
    "MODELS",
    "Run",
    "build",
    "make_data",
    "plot_boundaries",
    "plot_boundary_grid",
    "run",
    "save_compact_figure",
    "train_one",
]

N_SAMPLES, FACTOR, NOISE, TEST_SIZE = 500, 0.5, 0.05, 0.3
LR = 3e-3  # the same for every model; 1e-2 can make DEU training diverge
EPOCHS, QUICK_EPOCHS = 4000, 20
# 20 seeds: with 5, one model's 5/5 against another's 3/5 is within seed noise
# (issue 17: over 20 seeds the two were 12/20 and 9/20).
SEEDS, QUICK_SEEDS = 20, 1
FIGURE_SEEDS = 5  # the every-run figure draws the first five seeds
SEPARATED = 0.95  # a run "separates" the circles at this test accuracy or better

# (x_train, y_train, x_test, y_test)
Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _relu_net(layers: int, width: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    inputs = 2
    for _ in range(layers):
        modules += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*modules, nn.Linear(inputs, 1))


# label -> (hidden layers x width, builder). "DEU 1x2" is the paper's network
# with the layer's defaults (since issue 17 the ReLU start); "init=random" is the
# paper's random initialisation with the other defaults, "paper" the paper's
# layer throughout; the "oscillator" row starts both neurons at a*y'' + c*y = u(t)
# instead (an extra variant, not in the paper).
MODELS: dict[str, tuple[str, Callable[[], nn.Sequential]]] = {
    "DEU 1x2": ("1x2", lambda: nn.Sequential(nn.Linear(2, 2), deu.DEU(2), nn.Linear(2, 1))),
    "DEU 1x2 (init=random)": (
        "1x2",
        lambda: nn.Sequential(nn.Linear(2, 2), deu.DEU(2, init="random"), nn.Linear(2, 1)),
    ),
    "DEU 1x2 (paper)": (
        "1x2",
        lambda: nn.Sequential(nn.Linear(2, 2), deu.DEU(2, paper=True), nn.Linear(2, 1)),
    ),
    "DEU 1x2 (init=oscillator)": (
        "1x2",
        lambda: nn.Sequential(nn.Linear(2, 2), deu.DEU(2, init="oscillator"), nn.Linear(2, 1)),
    ),
    "Maxout 1x2 (3 pieces)": ("1x2", lambda: nn.Sequential(Maxout(2, 2, 3), nn.Linear(2, 1))),
    "ReLU 1x2": ("1x2", lambda: _relu_net(1, 2)),
    "ReLU 1x4": ("1x4", lambda: _relu_net(1, 4)),
    "ReLU 2x4": ("2x4", lambda: _relu_net(2, 4)),
}


def build(label: str, seed: int) -> nn.Sequential:
    """A freshly initialised network ``label`` of ``MODELS``, seeded."""
    seed_everything(seed)
    return MODELS[label][1]()


def make_data(seed: int) -> Data:
    """(x_train, y_train, x_test, y_test) as float32 tensors; labels are 0/1 floats."""
    from sklearn.datasets import make_circles
    from sklearn.model_selection import train_test_split

    x, y = make_circles(N_SAMPLES, factor=FACTOR, noise=NOISE, random_state=seed)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=seed, stratify=y
    )

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float32)

    return tensor(x_train), tensor(y_train), tensor(x_test), tensor(y_test)


def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(output.squeeze(-1), target)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return ((model(x).squeeze(-1) > 0).float() == y).float().mean().item()


@dataclass
class Run:
    label: str
    seed: int
    model: nn.Sequential
    train_acc: float
    test_acc: float
    final_loss: float
    seconds: float


def train_one(
    label: str,
    seed: int,
    data: Data,
    *,
    epochs: int,
    lr: float = LR,
) -> Run:
    """Train network ``label`` on ``data``; a diverged run has NaN metrics."""
    x_train, y_train, x_test, y_test = data
    model = build(label, seed)
    start = time.perf_counter()
    try:
        losses = train(
            model,
            x_train,
            y_train,
            loss_fn,
            epochs=epochs,
            lr=lr,
            description=f"{label}, seed {seed}",
            seed=seed,
        )
    except FloatingPointError:
        nan = float("nan")
        return Run(label, seed, model.eval(), nan, nan, nan, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    return Run(
        label,
        seed,
        model,
        accuracy(model, x_train, y_train),
        accuracy(model, x_test, y_test),
        losses[-1],
        seconds,
    )


_GRID = np.linspace(-1.6, 1.6, 161)
# inner circle (label 1) blue, outer circle (label 0) red
_COLOURS = np.array(["#b2182b", "#2166ac"])


def save_compact_figure(figure, path: Path, colors: int = 64) -> Path:
    """``save_figure``, then re-save the PNG with a ``colors``-colour palette (4-6x smaller)."""
    from PIL import Image

    save_figure(figure, path)
    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    palette.save(path, optimize=True)
    return path


def _draw_boundary(ax, model: nn.Module, data: Data, show_train: bool, size: float) -> None:
    """P(inner circle) in shades, the 0.5 boundary in black, and the points."""
    x_train, y_train, x_test, y_test = data
    gx, gy = np.meshgrid(_GRID, _GRID)
    points = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    with torch.no_grad():
        logits = model(points).squeeze(-1)
    probability = torch.sigmoid(logits).nan_to_num(0.5).reshape(gx.shape).numpy()
    ax.contourf(gx, gy, probability, levels=np.linspace(0, 1, 6), cmap="RdBu", alpha=0.35)
    if probability.min() < 0.5 < probability.max():
        ax.contour(gx, gy, probability, levels=[0.5], colors="k", linewidths=1.0)
    sets = [(x_test, y_test, "x", size)]
    if show_train:
        sets.insert(0, (x_train, y_train, ".", size))
    for x, y, marker, area in sets:
        ax.scatter(x[:, 0], x[:, 1], c=_COLOURS[y.long().numpy()], marker=marker, s=area, lw=0.7)
    ax.set_aspect("equal")
    ax.set_xticks([-1, 0, 1])
    ax.set_yticks([-1, 0, 1])


def plot_boundaries(runs: list[Run], data: Data, path: Path, columns: int = 3) -> Path:
    """One panel per run (all on ``data``): train points (dots) and test points (crosses)."""
    plt = pyplot()
    columns = min(columns, len(runs))
    rows = -(-len(runs) // columns)
    side = 3.0 if len(runs) > 1 else 4.2
    size = (side * columns, (side + 0.1) * rows)
    figure, axes = plt.subplots(
        rows, columns, figsize=size, squeeze=False, sharex=True, sharey=True
    )
    for ax, one in zip(axes.ravel(), runs, strict=False):
        _draw_boundary(ax, one.model, data, show_train=True, size=10)
        ax.set_title(f"{one.label}\ntest accuracy {one.test_acc:.3f}", fontsize=9)
    for ax in axes.ravel()[len(runs) :]:
        ax.axis("off")
    figure.suptitle(f"Nested circles, seed {runs[0].seed}: dots train, crosses test", fontsize=10)
    figure.tight_layout()
    return save_compact_figure(figure, path)


def plot_boundary_grid(runs: list[Run], datasets: dict[int, Data], path: Path) -> Path:
    """Every run: a row per model, a column per seed (each seed's own data, test points)."""
    plt = pyplot()
    labels = list(dict.fromkeys(one.label for one in runs))
    seeds = list(dict.fromkeys(one.seed for one in runs))
    figure, axes = plt.subplots(
        len(labels),
        len(seeds),
        figsize=(1.75 * len(seeds) + 0.9, 1.8 * len(labels)),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    for one in runs:
        ax = axes[labels.index(one.label), seeds.index(one.seed)]
        _draw_boundary(ax, one.model, datasets[one.seed], show_train=False, size=4)
        ax.set_title(f"seed {one.seed}: {one.test_acc:.2f}", fontsize=7)
        ax.tick_params(labelsize=6)
    for row, label in enumerate(labels):
        axes[row, 0].set_ylabel(label.replace(" (", "\n("), fontsize=7)
    figure.suptitle("Test accuracy and decision boundary of every run", fontsize=9)
    figure.tight_layout()
    return save_compact_figure(figure, path)


def plot_deu_activations(runs: list[Run], x: torch.Tensor, path: Path) -> Path:
    """Every DEU neuron's learned y(t), over the range of its inputs on ``x``."""
    plt = pyplot()
    deu_runs = [one for one in runs if isinstance(one.model[1], deu.DEU)]
    figure, axes = plt.subplots(1, len(deu_runs), figsize=(4.2 * len(deu_runs), 3.2), squeeze=False)
    for ax, one in zip(axes.ravel(), deu_runs, strict=True):
        unit = one.model[1]
        assert isinstance(unit, deu.DEU)
        with torch.no_grad():
            inputs = one.model[0](x)
            # column i spans neuron i's own input range
            fraction = torch.linspace(0, 1, 400).unsqueeze(1)
            t = inputs.amin(0) + fraction * (inputs.amax(0) - inputs.amin(0))
            y = unit(t)
        for i, name in enumerate(unit.subspaces()):
            ax.plot(t[:, i].numpy(), y[:, i].numpy(), label=f"neuron {i}: {name}")
        ax.axvline(0, color="0.8", lw=0.8, zorder=0)
        ax.set_title(f"{one.label}, seed {one.seed}", fontsize=9)
        ax.set_xlabel("t (the neuron's pre-activations on the data)")
        ax.set_ylabel("y(t)")
        ax.legend(fontsize=7)
    figure.tight_layout()
    return save_compact_figure(figure, path)


def run(args) -> dict:
    setup(args)
    out: Path = args.out
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    seeds = [args.seed + i for i in range(QUICK_SEEDS if args.quick else SEEDS)]

    runs: list[Run] = []
    datasets = {seed: make_data(seed) for seed in seeds}
    for seed in seeds:
        for label in MODELS:
            runs.append(train_one(label, seed, datasets[seed], epochs=epochs))
    first_data = datasets[seeds[0]]

    run_rows = [
        {
            "model": one.label,
            "seed": one.seed,
            "train_acc": one.train_acc,
            "test_acc": one.test_acc,
            "final_loss": one.final_loss,
            "seconds": one.seconds,
        }
        for one in runs
    ]
    rows = []
    summary_models = {}
    for label, (shape, _) in MODELS.items():
        mine = [one for one in runs if one.label == label]
        test = np.array([one.test_acc for one in mine])
        finite = test[np.isfinite(test)]
        row = {
            "model": label,
            "hidden": shape,
            "parameters": count_parameters(mine[0].model),
            "seeds": len(mine),
            "diverged": int(len(mine) - len(finite)),
            "test_acc_mean": float(finite.mean()) if len(finite) else float("nan"),
            "test_acc_min": float(finite.min()) if len(finite) else float("nan"),
            "test_acc_max": float(finite.max()) if len(finite) else float("nan"),
            "separated": f"{int((finite >= SEPARATED).sum())}/{len(mine)}",
            "train_acc_mean": float(np.nanmean([one.train_acc for one in mine])),
        }
        rows.append(row)
        summary_models[label] = {k: row[k] for k in ("test_acc_mean", "test_acc_min")}

    title = (
        f"Nested circles: held-out accuracy over {len(seeds)} seed(s), {epochs} full-batch "
        f"Adam epochs at lr {LR:g} (separated: test accuracy >= {SEPARATED})"
    )
    files = []
    write_table(out, "circles", rows, title=title)
    write_table(out, "circles_runs", run_rows, title="Nested circles: every run")
    files += [
        out / f"{name}.{ext}" for name in ("circles", "circles_runs") for ext in ("md", "csv")
    ]
    first = [one for one in runs if one.seed == seeds[0]]
    files.append(plot_boundaries(first, first_data, out / "circles_boundaries.png"))
    drawn = [one for one in runs if one.seed in seeds[:FIGURE_SEEDS]]
    files.append(plot_boundary_grid(drawn, datasets, out / "circles_boundaries_all_seeds.png"))
    files.append(plot_deu_activations(first, first_data[0], out / "circles_deu_activations.png"))

    describe = {
        one.label: one.model[1].describe() for one in first if isinstance(one.model[1], deu.DEU)
    }
    text = "\n\n".join(f"{label}, seed {seeds[0]}:\n{lines}" for label, lines in describe.items())
    (out / "circles_deu_equations.txt").write_text(text + "\n")
    files.append(out / "circles_deu_equations.txt")
    print(text)
    return {"models": summary_models, "files": [str(path) for path in files], "epochs": epochs}
