"""Digits (or MNIST / Fashion-MNIST): an MLP and a small CNN per activation (Table 2).

The paper's Table 2 trains a 2-layer MLP (1024 and 512 hidden units) and a
2-layer CNN (32 then 16 filters, then average pooling) on MNIST and
Fashion-MNIST with ReLU, SELU, PReLU, DEU and Maxout activations, and reports
test accuracy and model size. Without ``--data`` this runs the same on
scikit-learn's bundled 8x8 digits (1797 images, no download; a fixed quarter
held out for testing), with the MLP scaled down to 256 and 128 hidden units
and 3x3 convolutions (padding 1). With ``--data DIR`` it reads the four MNIST
IDX files of ``DIR`` (see :mod:`deu.experiments.idx`) and uses the paper's
sizes: 1024 and 512 hidden units, 5x5 convolutions without padding (which
gives the 30k parameters of the paper's CNN-ReLU).

Protocol, the same for every activation: Adam, minibatches of 128, 20 epochs
on digits (10 on IDX data). The learning rate is picked from
:data:`LEARNING_RATES` by accuracy on a validation split carved out of the
training set (seed ``--seed``); then each model is retrained on the whole
training set with :data:`SEEDS` seeds and evaluated once on the test set. A
learning rate whose training diverges counts as accuracy 0 on validation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deu.experiments._common import (
    Maxout,
    activation,
    count_parameters,
    progress,
    pyplot,
    save_figure,
    seed_everything,
    setup,
    train,
    write_table,
)

ACTIVATIONS = ("ReLU", "SELU", "PReLU", "DEU", "DEU (paper)", "Maxout")
MODELS = ("MLP", "CNN")
LEARNING_RATES = (3e-4, 1e-3, 3e-3)
SEEDS = 5
# Maxout pieces: the paper's Maxout nets are 1.2x-1.6x the size of its DEU nets;
# two pieces per unit is the closest (three would triple the hidden layers).
MAXOUT_PIECES = 2

# Table 2 of the paper: (size in thousands, MNIST %, Fashion-MNIST %).
PAPER: dict[tuple[str, str], tuple[int, float, float]] = {
    ("MLP", "ReLU"): (1411, 98.1, 89.0),
    ("CNN", "ReLU"): (30, 99.2, 90.2),
    ("MLP", "SELU"): (1293, 95.5, 87.5),
    ("CNN", "SELU"): (21, 98.8, 89.6),
    ("MLP", "PReLU"): (1293, 97.4, 88.7),
    ("CNN", "PReLU"): (21, 98.9, 89.6),
    ("MLP", "DEU"): (1292, 98.3, 89.8),
    ("CNN", "DEU"): (21, 99.2, 91.5),
    ("MLP", "Maxout"): (2043, 98.5, 89.4),
    ("CNN", "Maxout"): (26, 99.4, 91.3),
}


@dataclass
class Config:
    """Sizes and budget of one run of the experiment."""

    hidden: tuple[int, int]
    channels: tuple[int, int]
    kernel: int
    padding: int
    epochs: int
    seeds: int
    learning_rates: tuple[float, ...]
    batch_size: int = 128
    max_train: int | None = None  # subsample the training set (quick runs)
    max_test: int | None = None


class MaxoutConv2d(nn.Module):
    """``out_channels`` maxout feature maps, each the max of ``pieces`` convolutions."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, padding: int, pieces: int):
        super().__init__()
        self.out_channels, self.pieces = out_channels, pieces
        self.conv = nn.Conv2d(in_channels, out_channels * pieces, kernel, padding=padding)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        z = self.conv(input)
        return z.unflatten(1, (self.out_channels, self.pieces)).amax(2)


def build_mlp(inputs: int, hidden: tuple[int, int], classes: int, name: str) -> nn.Module:
    """Flatten, two hidden layers with activation ``name``, a linear read-out."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = inputs
    for size in hidden:
        if name == "Maxout":
            layers.append(Maxout(width, size, pieces=MAXOUT_PIECES))
        else:
            layers += [nn.Linear(width, size), activation(name, size)]
        width = size
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def build_cnn(
    image: tuple[int, int],
    channels: tuple[int, int],
    kernel: int,
    padding: int,
    classes: int,
    name: str,
) -> nn.Module:
    """Two convolutions with activation ``name``, 2x2 average pooling, a linear read-out."""
    layers: list[nn.Module] = []
    width = 1
    for size in channels:
        if name == "Maxout":
            layers.append(MaxoutConv2d(width, size, kernel, padding, MAXOUT_PIECES))
        else:
            layers += [nn.Conv2d(width, size, kernel, padding=padding), activation(name, size)]
        width = size
    layers += [nn.AvgPool2d(2), nn.Flatten()]
    features = nn.Sequential(*layers)
    with torch.no_grad():
        n_features = features(torch.zeros(1, 1, *image)).shape[1]
    return nn.Sequential(features, nn.Linear(n_features, classes))


def load_data(
    args, config: Config
) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dataset name, x_train, y_train, x_test, y_test); images are (N, 1, H, W) floats.

    Pixels are scaled by the training set's mean and standard deviation.
    """
    if args.data is not None:
        from deu.experiments.idx import load_mnist

        x_train, y_train, x_test, y_test = load_mnist(args.data)
        name = f"IDX files in {args.data}"
    else:
        from sklearn.datasets import load_digits

        data = load_digits()
        images, labels = data.images.astype(np.float32), data.target.astype(np.int64)
        order = np.random.default_rng(0).permutation(len(images))
        n_test = len(images) // 4
        test, training = order[:n_test], order[n_test:]
        x_train, y_train = images[training], labels[training]
        x_test, y_test = images[test], labels[test]
        name = "scikit-learn digits (8x8)"
    rng = np.random.default_rng(1)
    if config.max_train is not None and len(x_train) > config.max_train:
        keep = rng.choice(len(x_train), config.max_train, replace=False)
        x_train, y_train = x_train[keep], y_train[keep]
    if config.max_test is not None and len(x_test) > config.max_test:
        keep = rng.choice(len(x_test), config.max_test, replace=False)
        x_test, y_test = x_test[keep], y_test[keep]
    xs = [torch.tensor(np.asarray(x, dtype=np.float32)).unsqueeze(1) for x in (x_train, x_test)]
    mean, std = xs[0].mean(), xs[0].std().clamp_min(1e-6)
    xs = [(x - mean) / std for x in xs]
    ys = [torch.tensor(np.asarray(y, dtype=np.int64)) for y in (y_train, y_test)]
    return name, xs[0], ys[0], xs[1], ys[1]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(
            (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
            for i in range(0, len(x), batch)
        )
    return correct / max(len(x), 1)


def configure(args) -> Config:
    """The sizes: small for ``--quick``, the paper's for IDX data, scaled down for digits."""
    if args.quick:
        return Config(
            hidden=(16, 8),
            channels=(4, 4),
            kernel=3,
            padding=1,
            epochs=2,
            seeds=1,
            learning_rates=(3e-3,),
            max_train=200,
            max_test=100,
        )
    if args.data is not None:
        return Config(
            hidden=(1024, 512),
            channels=(32, 16),
            kernel=5,
            padding=0,
            epochs=10,
            seeds=SEEDS,
            learning_rates=LEARNING_RATES,
        )
    return Config(
        hidden=(256, 128),
        channels=(32, 16),
        kernel=3,
        padding=1,
        epochs=20,
        seeds=SEEDS,
        learning_rates=LEARNING_RATES,
    )


def run(args) -> dict:
    setup(args)
    config = configure(args)
    dataset, x_train, y_train, x_test, y_test = load_data(args, config)
    image = (x_train.shape[2], x_train.shape[3])
    classes = int(max(y_train.max().item(), y_test.max().item())) + 1

    def build(model: str, name: str) -> nn.Module:
        if model == "MLP":
            return build_mlp(image[0] * image[1], config.hidden, classes, name)
        return build_cnn(image, config.channels, config.kernel, config.padding, classes, name)

    # Validation split of the training set, for the learning rate.
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
    n_val = max(len(x_train) // 5, 1)
    val, fit = order[:n_val], order[n_val:]

    def fit_once(model_name, name, lr, seed, x, y, callback=None, tag=""):
        seed_everything(seed)
        model = build(model_name, name)
        started = time.perf_counter()
        try:
            train(
                model,
                x,
                y,
                nn.functional.cross_entropy,
                epochs=config.epochs,
                lr=lr,
                batch_size=config.batch_size,
                seed=seed,
                callback=callback,
                description=f"{model_name}-{name} {tag}lr={lr:g} seed={seed}",
            )
        except FloatingPointError:
            return model, None, time.perf_counter() - started
        return model, model, time.perf_counter() - started

    rows: list[dict] = []
    curves: dict[tuple[str, str], np.ndarray] = {}
    per_seed: dict[tuple[str, str], list[float]] = {}
    runs = [(m, a) for m in MODELS for a in ACTIVATIONS]
    for model_name, name in progress(runs, "digits: models"):
        # 1. the learning rate, by validation accuracy (seed 0).
        scores = {}
        for lr in config.learning_rates:
            if len(config.learning_rates) == 1:
                scores[lr] = float("nan")
                break
            _, trained, _ = fit_once(
                model_name, name, lr, args.seed, x_train[fit], y_train[fit], tag="val "
            )
            scores[lr] = 0.0 if trained is None else accuracy(trained, x_train[val], y_train[val])
        lr = max(config.learning_rates, key=lambda r: (np.nan_to_num(scores[r]), -r))
        # 2. seeds on the whole training set, test accuracy per epoch.
        accuracies, seconds, diverged = [], [], 0
        history: list[list[float]] = []
        for seed in range(args.seed, args.seed + config.seeds):
            curve: list[float] = []

            def record(epoch, model, curve=curve):
                curve.append(accuracy(model, x_test, y_test))
                model.train()

            model, trained, elapsed = fit_once(
                model_name, name, lr, seed, x_train, y_train, callback=record
            )
            seconds.append(elapsed)
            if trained is None:
                diverged += 1
                continue
            accuracies.append(accuracy(trained, x_test, y_test))
            history.append(curve)
        # Both DEU variants stand beside the paper's DEU numbers.
        paper_size, paper_mnist, paper_fashion = PAPER[(model_name, name.split(" ")[0])]
        rows.append(
            {
                "model": f"{model_name}-{name}",
                "params": count_parameters(model),
                "test_acc_mean": float(np.mean(accuracies)) if accuracies else float("nan"),
                "test_acc_std": float(np.std(accuracies)) if accuracies else float("nan"),
                "test_acc_min": float(np.min(accuracies)) if accuracies else float("nan"),
                "test_acc_per_seed": " ".join(f"{a:.4f}" for a in accuracies),
                "seeds": len(accuracies),
                "diverged": diverged,
                "lr": lr,
                "val_acc_at_lr": float(scores[lr]),
                "s_per_run": float(np.mean(seconds)),
                "paper_size_k": paper_size,
                "paper_mnist_pct": paper_mnist,
                "paper_fashion_pct": paper_fashion,
            }
        )
        if history:
            curves[(model_name, name)] = np.mean(np.array(history), axis=0)
        per_seed[(model_name, name)] = accuracies

    title = (
        f"Test accuracy on {dataset} ({len(x_train)} train / {len(x_test)} test images), "
        f"mean and std over {config.seeds} seed(s); MLP hidden {config.hidden}, "
        f"CNN channels {config.channels} ({config.kernel}x{config.kernel}); "
        "paper columns: Table 2 (MNIST, Fashion-MNIST)"
    )
    table = write_table(args.out, "digits", rows, title=title)
    figures = plot(args.out, rows, curves, per_seed, dataset)
    return {
        "dataset": dataset,
        "table": table,
        "rows": rows,
        "figures": [str(f) for f in figures],
    }


COLOURS = {
    "ReLU": "tab:blue",
    "SELU": "tab:green",
    "PReLU": "tab:cyan",
    "DEU": "tab:red",
    "DEU (paper)": "tab:pink",
    "Maxout": "tab:orange",
}


def plot(out, rows, curves, per_seed, dataset):
    plt = pyplot()
    figures = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, model_name in zip(axes, MODELS, strict=True):
        subset = [r for r in rows if r["model"].startswith(model_name + "-")]
        names = [r["model"].split("-", 1)[1] for r in subset]
        means = [100 * r["test_acc_mean"] for r in subset]
        stds = [100 * r["test_acc_std"] for r in subset]
        labels = [f"{n}\n{r['params'] / 1000:.1f}k" for n, r in zip(names, subset, strict=True)]
        colours = ["tab:red" if n == "DEU" else "tab:gray" for n in names]
        ax.bar(labels, means, yerr=stds, capsize=4, color=colours)
        for i, name in enumerate(names):
            seeds = 100 * np.asarray(per_seed.get((model_name, name), []))
            ax.plot(np.full(len(seeds), i), seeds, "k.", ms=5)
        finite = [m - s for m, s in zip(means, stds, strict=True) if np.isfinite(m)]
        finite += [100 * a for n in names for a in per_seed.get((model_name, n), [])]
        low = min(finite) if finite else 0.0
        ax.set_ylim(max(0.0, low - 3), 100)
        ax.set_title(f"{model_name}: mean, std and each seed (label: parameters)", fontsize=10)
        ax.set_ylabel("test accuracy (%)")
    fig.suptitle(dataset, fontsize=10)
    figures.append(save_figure(fig, out / "digits_accuracy.png"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, model_name in zip(axes, MODELS, strict=True):
        for name in ACTIVATIONS:
            if (model_name, name) in curves:
                curve = 100 * (1 - curves[(model_name, name)])
                ax.plot(
                    np.arange(1, len(curve) + 1),
                    curve,
                    label=name,
                    color=COLOURS[name],
                    lw=2 if name == "DEU" else 1,
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{model_name}: convergence (mean over seeds)")
        ax.legend(fontsize=8)
    fig.suptitle(dataset, fontsize=10)
    figures.append(save_figure(fig, out / "digits_convergence.png"))
    return figures
