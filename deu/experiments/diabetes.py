"""Diabetes regression with one hidden layer of 1 to 16 neurons (the paper's Figure 6).

scikit-learn's diabetes data (442 patients, 10 features, a disease-progression
score). For every activation (DEU, ReLU, LeakyReLU, SELU, Swish, Maxout) and
every width of the single hidden layer (1, 2, 4, 8, 16 neurons) a network
``10 -> width -> 1`` is trained with 3-fold cross-validation; features and
target are standardised with the statistics of the training folds. Each seed
draws its own fold split and initialisation.

Protocol, the same for every activation: full-batch Adam for :data:`EPOCHS`
steps on the mean squared error. One learning rate per activation is picked
from :data:`LEARNING_RATES`: the one with the lowest validation MSE averaged
over the widths, trained on two thirds of the training folds of the first
split and validated on the other third (seed ``--seed``; a diverging rate
counts as infinitely bad). Then the networks are retrained on the whole
training folds and evaluated once on the test fold.

Metrics, on the test fold: MSE in units of the (training-fold) variance of
the target, and the root relative squared error of the paper's Table 5,
``RSE = sqrt(sum (y - y_hat)^2) / sqrt(sum (y - mean(y))^2)`` (1.0 is as good
as predicting the test mean). The paper gives Figure 6 for this data without
numbers, so the table here has no paper column. A least-squares linear model
on the same folds is reported as a reference.
"""

from __future__ import annotations

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

ACTIVATIONS = ("DEU", "DEU (paper)", "ReLU", "LeakyReLU", "SELU", "Swish", "Maxout")
WIDTHS = (1, 2, 4, 8, 16)
FOLDS = 3
SEEDS = 5
EPOCHS = 500
LEARNING_RATES = (1e-3, 3e-3, 1e-2)
MAXOUT_PIECES = 3
RECORD_EVERY = 10  # epochs between two points of the convergence curves


def build(name: str, width: int, inputs: int = 10) -> nn.Module:
    if name == "Maxout":
        return nn.Sequential(Maxout(inputs, width, pieces=MAXOUT_PIECES), nn.Linear(width, 1))
    return nn.Sequential(nn.Linear(inputs, width), activation(name, width), nn.Linear(width, 1))


def load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True, scaled=False)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def folds(n: int, seed: int, k: int = FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) index pairs of a shuffled k-fold split."""
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, k)
    return [(np.concatenate(parts[:i] + parts[i + 1 :]), parts[i]) for i in range(k)]


def standardise(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features and target scaled by the training rows' mean and std, as float32 tensors."""
    mx, sx = x[train].mean(0), x[train].std(0)
    my, sy = y[train].mean(), y[train].std()
    sx = np.where(sx > 0, sx, 1.0)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32)

    return (
        tensor((x[train] - mx) / sx),
        tensor((y[train] - my) / sy).unsqueeze(1),
        tensor((x[test] - mx) / sx),
        tensor((y[test] - my) / sy).unsqueeze(1),
    )


def errors(prediction: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(MSE, RSE) of ``prediction`` against ``target`` (both standardised)."""
    residual = ((prediction - target) ** 2).sum().item()
    spread = ((target - target.mean()) ** 2).sum().item()
    return residual / len(target), float(np.sqrt(residual / max(spread, 1e-12)))


def fit(
    name: str, width: int, data, lr: float, epochs: int, seed: int, record: bool = False
) -> tuple[float, float, list[float], float] | None:
    """Train one network; (test MSE, test RSE, test-MSE curve, training MSE), or
    None if it diverged."""
    x_train, y_train, x_test, y_test = data
    seed_everything(seed)
    model = build(name, width, x_train.shape[1])
    curve: list[float] = []

    def callback(epoch: int, model: nn.Module) -> None:
        if record and (epoch + 1) % RECORD_EVERY == 0:
            with torch.no_grad():
                curve.append(nn.functional.mse_loss(model(x_test), y_test).item())

    try:
        train(
            model,
            x_train,
            y_train,
            nn.functional.mse_loss,
            epochs=epochs,
            lr=lr,
            seed=seed,
            callback=callback,
            description=f"{name} width {width} lr={lr:g}",
        )
    except FloatingPointError:
        return None
    with torch.no_grad():
        prediction = model(x_test)
        fitted = model(x_train)
    if not (torch.isfinite(prediction).all() and torch.isfinite(fitted).all()):
        return None
    mse, rse = errors(prediction, y_test)
    return mse, rse, curve, errors(fitted, y_train)[0]


def linear_reference(x: np.ndarray, y: np.ndarray, seeds: list[int]) -> tuple[list, list, list]:
    """Per seed, the fold-averaged (test MSE, test RSE, training MSE) of ordinary
    least squares."""
    mses, rses, trains = [], [], []
    for seed in seeds:
        fold_mse, fold_rse, fold_train = [], [], []
        for train_rows, test_rows in folds(len(x), seed):
            xt, yt, xs, ys = standardise(x, y, train_rows, test_rows)
            design = torch.cat([xt, torch.ones(len(xt), 1)], 1).double()
            weights = torch.linalg.lstsq(design, yt.double()).solution
            prediction = (torch.cat([xs, torch.ones(len(xs), 1)], 1).double() @ weights).float()
            mse, rse = errors(prediction, ys)
            fold_mse.append(mse)
            fold_rse.append(rse)
            fold_train.append(errors((design @ weights).float(), yt)[0])
        mses.append(float(np.mean(fold_mse)))
        rses.append(float(np.mean(fold_rse)))
        trains.append(float(np.mean(fold_train)))
    return mses, rses, trains


def run(args) -> dict:
    setup(args)
    widths = (1, 4) if args.quick else WIDTHS
    epochs = 20 if args.quick else EPOCHS
    rates = (3e-3,) if args.quick else LEARNING_RATES
    seeds = list(range(args.seed, args.seed + (1 if args.quick else SEEDS)))
    x, y = load()
    nan = float("nan")

    # 1. one learning rate per activation: the lowest mean validation MSE over the
    # widths, on a third of the training folds of the first split.
    train_rows, _ = folds(len(x), args.seed)[0]
    inner = np.random.default_rng(args.seed + 1).permutation(train_rows)
    n_val = len(inner) // 3
    validation_data = standardise(x, y, inner[n_val:], inner[:n_val])
    validation: dict[tuple[str, int, float], float] = {}
    grid = [(a, w, r) for a in ACTIVATIONS for w in widths for r in rates]
    if len(rates) > 1:
        for name, width, lr in progress(grid, "diabetes: learning rates"):
            result = fit(name, width, validation_data, lr, epochs, args.seed)
            validation[(name, width, lr)] = float("inf") if result is None else result[0]
    chosen: dict[str, float] = {}
    for name in ACTIVATIONS:
        pooled = {r: np.mean([validation.get((name, w, r), nan) for w in widths]) for r in rates}
        chosen[name] = min(rates, key=lambda r: (np.nan_to_num(pooled[r], nan=0.0), r))

    # 2. cross-validated test error per seed.
    splits = {seed: folds(len(x), seed) for seed in seeds}
    rows, curves = [], {}
    jobs = [(a, w) for a in ACTIVATIONS for w in widths]
    for name, width in progress(jobs, "diabetes: cross-validation"):
        lr = chosen[name]
        val_mse = validation.get((name, width, lr), nan)
        seed_mse, seed_rse, seed_train, history, diverged = [], [], [], [], 0
        for seed in seeds:
            fold_mse, fold_rse, fold_train = [], [], []
            for k, (train_rows, test_rows) in enumerate(splits[seed]):
                data = standardise(x, y, train_rows, test_rows)
                result = fit(name, width, data, lr, epochs, 1000 * seed + k, record=True)
                if result is None:
                    diverged += 1
                    continue
                fold_mse.append(result[0])
                fold_rse.append(result[1])
                history.append(result[2])
                fold_train.append(result[3])
            if len(fold_mse) == FOLDS:
                seed_mse.append(float(np.mean(fold_mse)))
                seed_rse.append(float(np.mean(fold_rse)))
                seed_train.append(float(np.mean(fold_train)))
        rows.append(
            {
                "activation": name,
                "width": width,
                "params": count_parameters(build(name, width)),
                "test_mse_mean": float(np.mean(seed_mse)) if seed_mse else nan,
                "test_mse_std": float(np.std(seed_mse)) if seed_mse else nan,
                "test_rse_mean": float(np.mean(seed_rse)) if seed_rse else nan,
                "test_rse_std": float(np.std(seed_rse)) if seed_rse else nan,
                "train_mse_mean": float(np.mean(seed_train)) if seed_train else nan,
                "lr": lr,
                "val_mse_at_lr": float(val_mse),
                "diverged_fits": diverged,
            }
        )
        if history:
            curves[(name, width)] = np.mean(np.array(history), axis=0)

    linear_mse, linear_rse, linear_train = linear_reference(x, y, seeds)
    rows.append(
        {
            "activation": "linear (least squares)",
            "width": 0,
            "params": 11,
            "test_mse_mean": float(np.mean(linear_mse)),
            "test_mse_std": float(np.std(linear_mse)),
            "test_rse_mean": float(np.mean(linear_rse)),
            "test_rse_std": float(np.std(linear_rse)),
            "train_mse_mean": float(np.mean(linear_train)),
            "lr": nan,
            "val_mse_at_lr": nan,
            "diverged_fits": 0,
        }
    )
    title = (
        f"Diabetes, 10 -> width -> 1, {FOLDS}-fold CV, {len(seeds)} seed(s), full-batch Adam "
        f"for {epochs} epochs; test MSE (standardised target) and RSE, mean and std over seeds"
    )
    table = write_table(args.out, "diabetes", rows, title=title)
    figures = plot(args.out, rows, curves, widths, epochs)
    return {"table": table, "rows": rows, "figures": [str(f) for f in figures]}


COLOURS = {
    "DEU": "tab:red",
    "DEU (paper)": "tab:pink",
    "ReLU": "tab:blue",
    "LeakyReLU": "tab:cyan",
    "SELU": "tab:green",
    "Swish": "tab:purple",
    "Maxout": "tab:orange",
}


def plot(out, rows, curves, widths, epochs):
    plt = pyplot()
    figures = []
    linear = rows[-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, label in (
        (axes[0], "test_mse", "test MSE (standardised target)"),
        (axes[1], "test_rse", "test RSE"),
    ):
        for i, name in enumerate(ACTIVATIONS):
            subset = [r for r in rows if r["activation"] == name]
            shift = 1 + 0.03 * (i - len(ACTIVATIONS) / 2)  # spread the error bars apart
            ax.errorbar(
                [r["width"] * shift for r in subset],
                [r[f"{metric}_mean"] for r in subset],
                yerr=[r[f"{metric}_std"] for r in subset],
                label=name,
                color=COLOURS[name],
                marker="o",
                capsize=3,
                lw=2 if name == "DEU" else 1,
            )
        ax.axhline(linear[f"{metric}_mean"], color="k", ls="--", lw=1, label="linear model")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(widths), [str(w) for w in widths])
        ax.set_xlabel("hidden neurons")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Diabetes, 3-fold CV: test error vs hidden-layer width (mean, std over seeds)")
    figures.append(save_figure(fig, out / "diabetes_width.png"))

    fig, axes = plt.subplots(1, len(widths), figsize=(3.2 * len(widths), 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, width in zip(axes, widths, strict=True):
        for name in ACTIVATIONS:
            if (name, width) in curves:
                curve = curves[(name, width)]
                steps = RECORD_EVERY * np.arange(1, len(curve) + 1)
                ax.plot(steps, curve, label=name, color=COLOURS[name], lw=2 if name == "DEU" else 1)
        ax.axhline(linear["test_mse_mean"], color="k", ls="--", lw=1)
        ax.set_title(f"{width} neuron{'s' if width > 1 else ''}")
        ax.set_xlabel("epoch (full batch)")
        ax.set_ylim(0.4, 1.2)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test MSE (standardised)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Diabetes: convergence of the test error (mean over folds and seeds)", y=1.04)
    figures.append(save_figure(fig, out / "diabetes_convergence.png"))
    return figures
