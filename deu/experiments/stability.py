"""Stability: does a network with DEUs train wherever the same network with ReLU does?

Two models, every activation, a grid of optimisers and learning rates, 3 seeds:

* ``digits``: the MLP of the digits experiment (64-256-128-10 on the 8x8
  digits, batch 128, 20 epochs); the metric is test accuracy (%).
* ``regression``: a 6-12-1 net on a synthetic smooth regression task (512
  training and 256 test points, batch 32, 40 epochs); the metric is the test
  MSE of the standardised target (1.0 is predicting the mean).

Activations: ReLU, PReLU, SiLU, ``deu.DEU(n)`` (the default) and
``deu.DEU(n, paper=True)`` (the paper's rules). Optimisers: Adam and AdamW at
3e-4, 1e-3, 3e-3 and 1e-2, and SGD with momentum 0.9 at 0.01, 0.03 and 0.1; the
same grid for every activation, nothing tuned per activation.

For each run: whether every batch loss stayed finite, the worst spike (the
largest batch loss over the first batch's), whether it improved (last epoch's
mean training loss below the first batch's loss), and the final metric. The
figure and the diagnosis table follow the coefficient gradients and the
subspace occupancy (``deu.health``) of the digits MLP over its first steps,
with the paper's rules and with the default. :mod:`deu.experiments.ablation`
runs the same measurements for each candidate fix on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

import deu
from deu.experiments._common import progress, pyplot, save_figure, seed_everything, write_table

# name -> a fresh activation for a layer of ``width`` neurons.
ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    "ReLU": lambda width: nn.ReLU(),
    "PReLU": lambda width: nn.PReLU(width),
    "SiLU": lambda width: nn.SiLU(),
    "DEU": lambda width: deu.DEU(width),
    "DEU (paper)": lambda width: deu.DEU(width, paper=True),
}
OPTIMISERS: tuple[tuple[str, float], ...] = (
    *(("Adam", lr) for lr in (3e-4, 1e-3, 3e-3, 1e-2)),
    *(("AdamW", lr) for lr in (3e-4, 1e-3, 3e-3, 1e-2)),
    *(("SGD", lr) for lr in (0.01, 0.03, 0.1)),
)
SEEDS = 3
MODELS = ("digits", "regression")
COEFFICIENTS = ("a", "b", "c", "c1", "c2")


@dataclass
class Task:
    """One model's data and training budget."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    sizes: tuple[int, ...]
    batch_size: int
    epochs: int
    classification: bool


def regression_data(n_train: int, n_test: int, seed: int = 0):
    """x ~ N(0, I_6); y = sin(x0) + x1*x2/2 + 0.3*x3^2 - x4/2 + noise, standardised
    with the training set's mean and deviation."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, 6, generator=g)
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + 0.3 * x[:, 3] ** 2 - 0.5 * x[:, 4]
    y = (y + 0.1 * torch.randn(len(x), generator=g)).unsqueeze(1)
    mean, std = y[:n_train].mean(), y[:n_train].std()
    y = (y - mean) / std
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def tasks(quick: bool) -> dict[str, Task]:
    from deu.experiments.digits import Config, load_data

    config = Config(
        hidden=(256, 128),
        channels=(32, 16),
        kernel=3,
        padding=1,
        epochs=20,
        seeds=SEEDS,
        learning_rates=(),
        max_train=200 if quick else None,
        max_test=100 if quick else None,
    )

    class _Args:
        data = None

    _, x_train, y_train, x_test, y_test = load_data(_Args(), config)
    n_train, n_test = (64, 32) if quick else (512, 256)
    regression = regression_data(n_train, n_test)
    return {
        "digits": Task(
            "digits",
            x_train.flatten(1),
            y_train,
            x_test.flatten(1),
            y_test,
            (64, 256, 128, 10),
            128,
            1 if quick else 20,
            True,
        ),
        "regression": Task(
            "regression",
            regression[0],
            regression[1],
            regression[2],
            regression[3],
            (6, 12, 1),
            32,
            1 if quick else 40,
            False,
        ),
    }


def build(task: Task, activation: Callable[[int], nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(task.sizes[:-1], task.sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(task.sizes) - 2:
            layers.append(activation(fan_out))
    return nn.Sequential(*layers)


def optimiser(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "Adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "AdamW":
        return torch.optim.AdamW(params, lr=lr)
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"optimiser must be Adam, AdamW or SGD, got {name!r}")


class _Loss(Protocol):
    """What the loss needs of a task (this module's Task, broad's Task)."""

    @property
    def classification(self) -> bool: ...


def _loss(task: _Loss, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task.classification:
        return nn.functional.cross_entropy(output, target)
    return nn.functional.mse_loss(output, target)


def _metric(task: Task, model: nn.Module) -> float:
    with torch.no_grad():
        output = model(task.x_test)
    if task.classification:
        return 100.0 * float((output.argmax(1) == task.y_test).float().mean())
    return float(nn.functional.mse_loss(output, task.y_test))


def train_run(
    task: Task,
    activation: Callable[[int], nn.Module],
    opt: str,
    lr: float,
    seed: int,
    monitor: Callable[[int, nn.Module], None] | None = None,
) -> dict:
    """One training run; stops at the first non-finite batch loss.

    ``monitor(step, model)`` runs after every backward pass, before the step.
    """
    seed_everything(seed)
    model = build(task, activation)
    optim = optimiser(opt, model.parameters(), lr)
    generator = torch.Generator().manual_seed(seed)
    n = len(task.x_train)
    losses: list[float] = []
    finite = True
    step = 0
    last_epoch: list[float] = []
    for _ in range(task.epochs):
        order = torch.randperm(n, generator=generator)
        last_epoch = []
        for start in range(0, n, task.batch_size):
            index = order[start : start + task.batch_size]
            optim.zero_grad()
            try:
                loss = _loss(task, model(task.x_train[index]), task.y_train[index])
            except ValueError:
                # A DEU refuses coefficients that have diverged (non-finite, or so
                # large that b^2 - 4ac overflows): the run has diverged.
                finite = False
                break
            if not torch.isfinite(loss):
                finite = False
                break
            loss.backward()
            if monitor is not None:
                monitor(step, model)
            optim.step()
            losses.append(loss.item())
            last_epoch.append(losses[-1])
            step += 1
        if not finite:
            break
    try:
        metric = _metric(task, model) if finite else math.nan
    except ValueError:  # the last step made the coefficients diverge
        finite, metric = False, math.nan
    if finite and not math.isfinite(metric):
        finite = False
    initial = losses[0] if losses else math.nan
    return {
        "finite": finite,
        "spike": max(losses) / initial if losses else math.nan,
        "improved": finite and bool(last_epoch) and float(np.mean(last_epoch)) < initial,
        "metric": metric,
        "steps": step,
    }


def grid(
    tasks_: dict[str, Task],
    activations: dict[str, Callable[[int], nn.Module]],
    optimisers,
    seeds: int,
    base_seed: int,
    description: str,
) -> list[dict]:
    """Every (model, activation, optimiser, lr, seed) run, one dict each."""
    runs = []
    jobs = [
        (task, name, opt, lr, seed)
        for task in tasks_.values()
        for name in activations
        for opt, lr in optimisers
        for seed in range(base_seed, base_seed + seeds)
    ]
    for task, name, opt, lr, seed in progress(jobs, description):
        result = train_run(task, activations[name], opt, lr, seed)
        runs.append(
            {"model": task.name, "activation": name, "optimiser": opt, "lr": lr, "seed": seed}
            | result
        )
    return runs


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}g}"


def per_setting_table(runs: list[dict]) -> list[dict]:
    """One row per (model, activation, optimiser, lr): seeds finite, worst spike, metric."""
    keys = sorted(
        {(r["model"], r["activation"], r["optimiser"], r["lr"]) for r in runs},
        key=lambda k: (MODELS.index(k[0]) if k[0] in MODELS else 9, k[1], k[2], k[3]),
    )
    rows = []
    for key in keys:
        group = [r for r in runs if (r["model"], r["activation"], r["optimiser"], r["lr"]) == key]
        metrics = [r["metric"] for r in group if r["finite"]]
        rows.append(
            {
                "model": key[0],
                "activation": key[1],
                "optimiser": key[2],
                "lr": key[3],
                "finite": f"{sum(r['finite'] for r in group)}/{len(group)}",
                "improved": f"{sum(r['improved'] for r in group)}/{len(group)}",
                "worst spike": _fmt(max(r["spike"] for r in group)),
                "metric mean": _fmt(float(np.mean(metrics)) if metrics else math.nan, 4),
            }
        )
    return rows


def summary_table(runs: list[dict], reference: str = "ReLU") -> list[dict]:
    """One row per (model, activation) over the whole grid, and how it does on the
    runs where ``reference`` is finite and improving."""
    rows = []
    for model in [m for m in MODELS if any(r["model"] == m for r in runs)]:
        ok = {
            (r["optimiser"], r["lr"], r["seed"])
            for r in runs
            if r["model"] == model and r["activation"] == reference and r["improved"]
        }
        names = list(dict.fromkeys(r["activation"] for r in runs if r["model"] == model))
        for name in names:
            group = [r for r in runs if r["model"] == model and r["activation"] == name]
            where_ok = [r for r in group if (r["optimiser"], r["lr"], r["seed"]) in ok]
            spikes = [r["spike"] for r in group if math.isfinite(r["spike"])]
            best = _best_metric(group, classification=model == "digits")
            rows.append(
                {
                    "model": model,
                    "activation": name,
                    "runs finite": f"{sum(r['finite'] for r in group)}/{len(group)}",
                    f"improving where {reference} improves": (
                        f"{sum(r['improved'] for r in where_ok)}/{len(where_ok)}"
                    ),
                    "median spike": _fmt(float(np.median(spikes)) if spikes else math.nan),
                    "worst spike": _fmt(max(spikes) if spikes else math.nan),
                    "best setting": best[0],
                    "metric there": best[1],
                }
            )
    return rows


def _best_metric(group: list[dict], classification: bool) -> tuple[str, str]:
    """The optimiser setting with the best mean metric over seeds (all seeds finite)."""
    settings = sorted({(r["optimiser"], r["lr"]) for r in group})
    best: tuple[float, str, str] | None = None
    for opt, lr in settings:
        runs = [r for r in group if (r["optimiser"], r["lr"]) == (opt, lr)]
        if not all(r["finite"] for r in runs):
            continue
        values = [r["metric"] for r in runs]
        mean = float(np.mean(values))
        score = -mean if classification else mean
        text = f"{mean:.4g} ± {float(np.std(values)):.2g}"
        if best is None or score < best[0]:
            best = (score, f"{opt} {lr:g}", text)
    return (best[1], best[2]) if best else ("none finite", "-")


def diagnosis(task: Task, variants: dict[str, Callable[[int], nn.Module]], steps: int, seed: int):
    """Per step of the digits MLP under Adam at 1e-3: the largest |gradient| of each
    coefficient over all DEU neurons, the subspace of the neuron that has it, the
    batch loss, and the subspace occupancy. Returns {variant: trace}."""
    traces = {}
    for name, activation in variants.items():
        trace: dict[str, list] = {"grad": [], "where": [], "occupancy": []}

        def monitor(step: int, model: nn.Module, trace=trace) -> None:
            if step >= steps:
                return
            layers = [m for m in model.modules() if isinstance(m, deu.DEU)]
            # Every layer has a gradient here: monitor runs after the backward.
            grads = torch.cat(
                [m.coefficient_gradient().abs() for m in layers]  # type: ignore[union-attr]
            )
            names = [s for m in layers for s in m.subspaces()]
            largest, neuron = grads.max(dim=0)
            trace["grad"].append(largest.tolist())
            trace["where"].append([names[i] for i in neuron.tolist()])
            report = deu.health(model)
            counts: dict[str, int] = {}
            for layer in report:
                for subspace, number in layer.subspaces.items():
                    counts[subspace] = counts.get(subspace, 0) + number
            trace["occupancy"].append(counts)

        short = Task(
            **{
                **task.__dict__,
                "epochs": max(1, math.ceil(steps * task.batch_size / len(task.x_train))),
            }
        )
        train_run(short, activation, "Adam", 1e-3, seed, monitor=monitor)
        traces[name] = trace
    return traces


def diagnosis_table(traces: dict) -> list[dict]:
    """Per variant, coefficient and subspace: the largest |gradient| seen there."""
    rows = []
    for name, trace in traces.items():
        worst: dict[tuple[str, str], float] = {}
        for grads, where in zip(trace["grad"], trace["where"], strict=True):
            for coefficient, value, subspace in zip(COEFFICIENTS, grads, where, strict=True):
                key = (coefficient, subspace)
                worst[key] = max(worst.get(key, 0.0), value)
        for coefficient in COEFFICIENTS:
            entries = sorted(
                ((v, s) for (c, s), v in worst.items() if c == coefficient), reverse=True
            )
            rows.append(
                {
                    "activation": name,
                    "coefficient": coefficient,
                    "largest |grad|": _fmt(entries[0][0]) if entries else "-",
                    "in subspace": entries[0][1] if entries else "-",
                    "runner-up": (
                        f"{_fmt(entries[1][0])} ({entries[1][1]})" if len(entries) > 1 else "-"
                    ),
                }
            )
    return rows


def plot_diagnosis(out, traces: dict):
    plt = pyplot()
    figure, axes = plt.subplots(2, len(traces), figsize=(6 * len(traces), 7), squeeze=False)
    for column, (name, trace) in enumerate(traces.items()):
        grads = np.array(trace["grad"])
        ax = axes[0][column]
        for j, coefficient in enumerate(COEFFICIENTS):
            ax.semilogy(np.maximum(grads[:, j], 1e-12), label=coefficient)
        ax.set_title(f"{name}: largest |dL/d coefficient| per step")
        ax.set_xlabel("step")
        ax.legend()
        ax = axes[1][column]
        subspaces = sorted({s for counts in trace["occupancy"] for s in counts})
        stacked = np.array([[c.get(s, 0) for s in subspaces] for c in trace["occupancy"]])
        ax.stackplot(np.arange(len(stacked)), stacked.T, labels=subspaces)
        ax.set_title(f"{name}: neurons per subspace")
        ax.set_xlabel("step")
        ax.legend(fontsize=7, loc="lower left")
    return save_figure(figure, out / "stability_diagnosis.png")


def plot_grid(out, runs: list[dict]):
    """Worst spike per activation and setting, one panel per model."""
    plt = pyplot()
    models = [m for m in MODELS if any(r["model"] == m for r in runs)]
    figure, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        group = [r for r in runs if r["model"] == model]
        settings = list(dict.fromkeys((r["optimiser"], r["lr"]) for r in group))
        names = list(dict.fromkeys(r["activation"] for r in group))
        for offset, name in enumerate(names):
            finite, diverged = [], []
            for k, setting in enumerate(settings):
                runs = [
                    r
                    for r in group
                    if r["activation"] == name and (r["optimiser"], r["lr"]) == setting
                ]
                spikes = [r["spike"] for r in runs if r["finite"]]
                if spikes:
                    finite.append((k, max(spikes)))
                if not all(r["finite"] for r in runs):
                    diverged.append(k)
            x = 0.08 * offset
            (line,) = ax.semilogy(
                [k + x for k, _ in finite], [v for _, v in finite], "o", label=name
            )
            if diverged:
                # A setting with a run that is not finite: an x at the top.
                ax.semilogy(
                    [k + x for k in diverged], [1e9] * len(diverged), "x", color=line.get_color()
                )
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels([f"{o}\n{lr:g}" for o, lr in settings], fontsize=7)
        ax.set_ylabel("worst loss spike of finite runs (max / initial)\nx at 1e9: a run not finite")
        ax.set_title(model)
        ax.legend(fontsize=7)
    return save_figure(figure, out / "stability_spikes.png")


def run(args) -> dict:
    quick = args.quick
    tasks_ = tasks(quick)
    optimisers = OPTIMISERS[:1] + OPTIMISERS[-1:] if quick else OPTIMISERS
    seeds = 1 if quick else SEEDS
    runs = grid(tasks_, ACTIVATIONS, optimisers, seeds, args.seed, "stability")
    write_table(args.out, "stability_runs", runs, floatfmt=".4g")
    settings = per_setting_table(runs)
    write_table(args.out, "stability_settings", settings, "Every setting")
    summary = summary_table(runs)
    text = write_table(args.out, "stability", summary, "Stability over the grid")
    variants = {name: ACTIVATIONS[name] for name in ("DEU (paper)", "DEU")}
    traces = diagnosis(tasks_["digits"], variants, 10 if quick else 200, args.seed)
    write_table(args.out, "stability_diagnosis", diagnosis_table(traces), "Largest gradients")
    figures = [plot_grid(args.out, runs), plot_diagnosis(args.out, traces)]
    print(text)
    return {"runs": runs, "summary": summary, "figures": figures}
