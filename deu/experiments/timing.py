"""Milliseconds per training batch of a 2-layer MLP for MNIST (the paper's Table 4).

The paper trains "a 2-layer fully connected network for MNIST", keeps the
first layer fixed and varies the second from 16 to 1024 units, with DEU,
Maxout (three affine maps), PReLU and ReLU, batch 256, and reports the
training time of one batch (GeForce GTX TITAN). The text leaves the
architecture open, so two readings are timed:

* ``784-W-10``: the input layer (784) fixed, one hidden layer of W units;
* ``784-1024-W-10``: a fixed hidden layer of 1024 units (the Table 2 MLP's
  first layer), then W units; the activation is applied in both.

One training step is a forward pass on a batch of 256 random inputs, the
cross-entropy, the backward pass and an Adam step. Each configuration gets
warm-up steps, then the models are timed in turns (round-robin, so that a
change in the machine's load hits all of them alike), and the table gives the
median milliseconds per step over the timed repeats. Numbers depend on the
machine and its load; compare ratios within one run.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from torch import nn

from deu.experiments._common import (
    Maxout,
    activation,
    progress,
    pyplot,
    save_figure,
    seed_everything,
    setup,
    write_table,
)

ACTIVATIONS = ("DEU", "Maxout", "PReLU", "ReLU")
WIDTHS = (16, 32, 64, 128, 256, 512, 1024)
ARCHITECTURES = ("784-W-10", "784-1024-W-10")
BATCH = 256
MAXOUT_PIECES = 3

# Table 4 of the paper (ms per batch, GTX TITAN): width -> DEU, Maxout, PReLU, ReLU.
PAPER: dict[int, tuple[float, float, float, float]] = {
    16: (47, 40, 37, 37),
    32: (47, 40, 38, 37),
    64: (49, 43, 38, 37),
    128: (53, 47, 40, 39),
    256: (55, 54, 43, 44),
    512: (68, 89, 50, 47),
    1024: (186, 209, 50, 47),
}


def build(architecture: str, name: str, width: int) -> nn.Module:
    """The MLP of ``architecture`` ("784-W-10" or "784-1024-W-10") with activation ``name``."""
    sizes = [784, width] if architecture == "784-W-10" else [784, 1024, width]
    layers: list[nn.Module] = []
    for inputs, outputs in zip(sizes[:-1], sizes[1:], strict=True):
        if name == "Maxout":
            layers.append(Maxout(inputs, outputs, pieces=MAXOUT_PIECES))
        else:
            layers += [nn.Linear(inputs, outputs), activation(name, outputs)]
    layers.append(nn.Linear(sizes[-1], 10))
    return nn.Sequential(*layers)


class Step:
    """One training step of a model on a fixed random batch, callable and timeable."""

    def __init__(self, model: nn.Module, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.model = model
        self.x = torch.randn(BATCH, 784, generator=generator)
        self.y = torch.randint(0, 10, (BATCH,), generator=generator)
        self.optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def __call__(self) -> None:
        self.optimiser.zero_grad()
        nn.functional.cross_entropy(self.model(self.x), self.y).backward()
        self.optimiser.step()

    def time(self, steps: int) -> float:
        """Milliseconds per step over ``steps`` consecutive steps."""
        started = time.perf_counter()
        for _ in range(steps):
            self()
        return 1000 * (time.perf_counter() - started) / steps


def run(args) -> dict:
    setup(args)
    widths = (16, 64) if args.quick else WIDTHS
    architectures = ARCHITECTURES[:1] if args.quick else ARCHITECTURES
    warmup, repeats, steps = (1, 3, 1) if args.quick else (5, 15, 3)
    load_before = os.getloadavg()[0]
    threads = torch.get_num_threads()

    rows, raw = [], {}
    configs = [(arch, width) for arch in architectures for width in widths]
    for arch, width in progress(configs, "timing: configurations"):
        seed_everything(args.seed)
        runners = {name: Step(build(arch, name, width), args.seed) for name in ACTIVATIONS}
        for runner in runners.values():
            for _ in range(warmup):
                runner()
        samples: dict[str, list[float]] = {name: [] for name in ACTIVATIONS}
        for _ in range(repeats):
            for name, runner in runners.items():
                samples[name].append(runner.time(steps))
        medians = {name: statistics.median(values) for name, values in samples.items()}
        raw[(arch, width)] = samples
        paper = PAPER.get(width, (float("nan"),) * 4)
        row: dict[str, object] = {"architecture": arch, "width": width}
        row.update({f"{name}_ms": medians[name] for name in ACTIVATIONS})
        row["DEU/ReLU"] = medians["DEU"] / medians["ReLU"]
        row["Maxout/ReLU"] = medians["Maxout"] / medians["ReLU"]
        row["DEU/Maxout"] = medians["DEU"] / medians["Maxout"]
        row.update(
            {f"paper_{name}_ms": float(v) for name, v in zip(ACTIVATIONS, paper, strict=True)}
        )
        rows.append(row)
    load_after = os.getloadavg()[0]

    title = (
        f"ms per training step (batch {BATCH}, forward + backward + Adam), median of {repeats} "
        f"repeats of {steps} step(s) after {warmup} warm-up step(s); CPU, {threads} torch "
        f"thread(s), 1-minute load average {load_before:.2f} before and {load_after:.2f} after; "
        "paper columns: Table 4 (GTX TITAN)"
    )
    table = write_table(args.out, "timing", rows, title=title, floatfmt=".3g")
    figure = plot(args.out, rows, architectures)
    return {
        "table": table,
        "rows": rows,
        "threads": threads,
        "load": (load_before, load_after),
        "figures": [str(figure)],
    }


COLOURS = {"DEU": "tab:red", "Maxout": "tab:orange", "PReLU": "tab:green", "ReLU": "tab:blue"}


def plot(out, rows, architectures):
    plt = pyplot()
    from matplotlib import ticker

    panels = [*architectures, "paper"]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.4 * len(panels), 3.8), constrained_layout=True
    )
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "paper":
            xs = sorted(PAPER)
            for i, name in enumerate(ACTIVATIONS):
                ax.plot(xs, [PAPER[w][i] for w in xs], marker="o", color=COLOURS[name], label=name)
            ax.set_title("paper's Table 4 (GTX TITAN GPU)")
        else:
            subset = [r for r in rows if r["architecture"] == panel]
            for name in ACTIVATIONS:
                ax.plot(
                    [r["width"] for r in subset],
                    [r[f"{name}_ms"] for r in subset],
                    marker="o",
                    color=COLOURS[name],
                    label=name,
                )
            ax.set_title(f"this machine (CPU): {panel}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(WIDTHS), [str(w) for w in WIDTHS], fontsize=8)
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("width W of the varied layer")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("ms per training batch of 256 (log scale)")
    axes[0].legend(fontsize=8)
    return save_figure(fig, out / "timing_ms.png")
