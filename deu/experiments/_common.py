"""What the experiments share: seeding, tables, figures, Maxout, training loops."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import deu

__all__ = [
    "Maxout",
    "activation",
    "count_parameters",
    "progress",
    "quick_threads",
    "save_figure",
    "seed_everything",
    "setup",
    "train",
    "write_table",
]


def setup(args) -> None:
    """Apply the common command-line settings (threads, seed)."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)


@contextmanager
def quick_threads(args) -> Iterator[None]:
    """``--quick`` runs use one torch thread unless ``--threads`` says otherwise
    (restored afterwards): their tiny tensors gain nothing from more, and on a
    busy machine extra threads only wait on each other."""
    if not args.quick or getattr(args, "threads", None):
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def progress(iterable: Iterable, description: str, total: int | None = None) -> Iterable:
    """A tqdm progress bar on stderr (quiet when stderr is not a terminal)."""
    return tqdm(iterable, desc=description, total=total, leave=False, dynamic_ncols=True)


def write_table(
    out: Path, name: str, rows: Sequence[dict], title: str = "", floatfmt: str = ".4g"
) -> str:
    """Write ``rows`` (dicts with the same keys) as ``out/name.csv`` and ``out/name.md``.

    Returns the Markdown text. Floats are written in full in the CSV and with
    ``floatfmt`` in the Markdown.
    """
    if not rows:
        raise ValueError(f"table {name!r} has no rows")
    columns = list(rows[0])
    for row in rows:
        if list(row) != columns:
            raise ValueError(f"table {name!r}: row keys {list(row)} differ from {columns}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    def cell(value) -> str:
        if isinstance(value, float):
            return format(value, floatfmt)
        return str(value)

    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    (out / f"{name}.md").write_text(text)
    return text


def save_figure(figure, path: Path) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Maxout(nn.Module):
    """A maxout layer: ``out_features`` units, each the max of ``pieces`` linear maps."""

    def __init__(self, in_features: int, out_features: int, pieces: int = 3) -> None:
        super().__init__()
        self.out_features, self.pieces = out_features, pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        z = self.linear(input).unflatten(-1, (self.out_features, self.pieces))
        return z.amax(-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    "DEU": lambda width: deu.DEU(width),
    "DEU (paper)": lambda width: deu.DEU(width, paper=True),
    "ReLU": lambda width: nn.ReLU(),
    "LeakyReLU": lambda width: nn.LeakyReLU(0.01),
    "PReLU": lambda width: nn.PReLU(width),
    "SELU": lambda width: nn.SELU(),
    "Swish": lambda width: nn.SiLU(),
}


def activation(name: str, width: int) -> nn.Module:
    """A fresh activation module by name (``ACTIVATIONS``), for ``width`` neurons."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name](width)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int | None = None,
    weight_decay: float = 0.0,
    description: str = "training",
    seed: int = 0,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> list[float]:
    """Adam on (x, y) for ``epochs`` epochs; returns the mean training loss per epoch.

    ``batch_size=None`` is full-batch. ``callback(epoch, model)`` runs after
    every epoch (for snapshots). Raises if the loss becomes non-finite, naming
    the epoch, rather than returning a silently broken model.
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(x)
    batch = n if batch_size is None else batch_size
    losses = []
    for epoch in progress(range(epochs), description):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        model.train()
        for start in range(0, n, batch):
            index = order[start : start + batch]
            optimiser.zero_grad()
            loss = loss_fn(model(x[index]), y[index])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(index)
        mean = total / n
        if not np.isfinite(mean):
            raise FloatingPointError(f"{description}: training loss became {mean} at epoch {epoch}")
        losses.append(mean)
        if callback is not None:
            callback(epoch, model)
    model.eval()
    return losses
