"""One DEU neuron initialised as ReLU learns sin(t), with each outward gravitation or none.

The paper: "only one DEU neuron that is initialized with ReLU (a = c = c1 = c2 = 0,
b = 1) can transform itself to a sine function ... the learned differential
equation coefficients {a, b, c} and initial condition coefficients {c1, c2}
perfectly represented a sine function after training." It gives no range, model
or optimiser, so we take the claim literally: the model is the neuron alone,
y_hat(t) = DEU(t), no input scale/shift and no output affine, and only its five
coefficients are trained (MSE, full batch, Adam).

What can represent sin: y(t) = homogeneous(t) + u(t) * step_response(t). For
t < 0 only the homogeneous part is left, and with b = 0, a*c > 0 it is
c1 cos(wt) + c2 sin(wt)/w, w = sqrt(c/a): exactly sin(t) for a = c, c1 = 0, c2 = 1.
For t > 0 the step adds (1 - cos(wt))/c, which vanishes only as c -> infinity.
So we train on two ranges:

* ``[-2pi, 2pi]``, the natural symmetric range: sin is reachable only in the limit
  a = c -> infinity (a hand-set a = c = 10 gives MSE 0.0075, a = c = 100 7.5e-5, see the
  reference table), and the step at t = 0 is inside the data;
* ``[-2pi, 0]``: sin is exactly representable with finite coefficients, and the
  ReLU start is flat there (y = c1), so its b gets no gradient either: without
  gravitation only c1 can move. This isolates the paper's escape claim.

Each range is trained from the same ReLU start with the default model (its
derived gravitation), with the paper's rules (``paper=True``: the neighbour
gravitation, the exponent cap 14) and with the default model without
gravitation, on 200 values of t drawn uniformly from the range (the seed's only
role; the same draw for every setting), for five seeds: single runs turn
out to hinge on tiny numerical differences (a different backend, a different
sample), so the summary counts how many of the seeds reach sin. Outputs:
``sine.md/csv`` (every run: final coefficients, subspaces visited, errors),
``sine_summary.md/csv`` (per range and setting: how many runs reached sin),
``sine_reference.md/csv`` (hand-set sine-like coefficients, not trained) and one
figure per range: for the first seed with and without gravitation (and, when
another seed did better with gravitation, that best seed too, labelled as such),
activation snapshots over training coloured by epoch, the path of (a, b, c) in
three projections with the subspace changes marked, and the loss.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

import deu
from deu.experiments._common import (
    pyplot,
    save_figure,
    seed_everything,
    setup,
    train,
    write_table,
)

RANGES: dict[str, tuple[float, float]] = {
    "symmetric": (-2 * math.pi, 2 * math.pi),
    "negative": (-2 * math.pi, 0.0),
}
LABELS = {"symmetric": "[-2pi, 2pi]", "negative": "[-2pi, 0]"}
LR = 3e-3
# "Reaches sin": largest |y - sin| on a dense grid of the range below this.
REACHED = 0.05
# Hand-set coefficients near sin (not trained), for the reference table.
REFERENCES = [
    (1.0, 0.0, 1.0, 0.0, 1.0),
    (10.0, 0.0, 10.0, 0.0, 1.0),
    (100.0, 0.0, 100.0, 0.0, 1.0),
]


def snapshot_epochs(epochs: int, count: int) -> list[int]:
    """About ``count`` epochs, geometrically spaced (the shape changes fastest early)."""
    points = np.unique(np.round(np.geomspace(1, epochs, count)).astype(int) - 1)
    return sorted(set(points.tolist()) | {epochs - 1})


# The models compared: (name, deu.DEU keyword arguments). "derived" is the
# default model (its derived gravitation), "paper" the paper's rules (its
# neighbour gravitation, exponent cap 14, critical rule), "off" the default
# model without gravitation.
SETTINGS: tuple[tuple[str, dict], ...] = (
    ("derived", {}),
    ("paper", {"paper": True}),
    ("off", {"gravitation": False}),
)


def fit(
    span: tuple[float, float],
    rules: dict,
    *,
    epochs: int,
    points: int,
    snapshots: list[int],
    description: str,
    seed: int,
) -> dict:
    """Train one ReLU-initialised DEU on sin over ``span``; the history and the result.

    The training inputs are ``points`` values of t drawn uniformly from ``span``
    with ``seed`` (the same draw with and without gravitation): the only randomness.
    """
    generator = torch.Generator().manual_seed(seed)
    low, high = span
    t = (low + (high - low) * torch.rand(points, generator=generator)).sort().values.unsqueeze(1)
    target = torch.sin(t)
    dense = torch.linspace(*span, 1001).unsqueeze(1)
    neuron = deu.DEU(1, init="relu", **rules)
    history = [neuron.coeffs.detach().clone().flatten()]
    curves: dict[int, np.ndarray] = {}

    def record(epoch: int, model: nn.Module) -> None:
        history.append(model.coeffs.detach().clone().flatten())  # type: ignore[operator]
        if epoch in snapshots:
            with torch.no_grad():
                curves[epoch] = model(dense).flatten().numpy()

    with torch.no_grad():
        curves[-1] = neuron(dense).flatten().numpy()
    losses = train(
        neuron,
        t,
        target,
        nn.functional.mse_loss,
        epochs=epochs,
        lr=LR,
        description=description,
        seed=seed,
        callback=record,
    )
    path = torch.stack(history)  # (epochs + 1, 5): the start, then after every epoch
    visited = deu.subspaces(path)
    changes = [i for i in range(1, len(visited)) if visited[i] != visited[i - 1]]
    with torch.no_grad():
        final_mse = float(nn.functional.mse_loss(neuron(t), target))
        max_error = float((neuron(dense) - torch.sin(dense)).abs().max())
    below = [i for i, loss in enumerate(losses) if loss < 1e-3]
    return {
        "coeffs": neuron.coeffs.detach().flatten().tolist(),
        # How far (a, b, c) moved from the ReLU start (Euclidean).
        "travel": float((path[-1, :3] - path[0, :3]).norm()),
        "final_subspace": neuron.subspaces()[0],
        "path": path.numpy(),
        "visited": visited,
        "changes": changes,
        "losses": losses,
        "curves": curves,
        "dense": dense.flatten().numpy(),
        "final_mse": final_mse,
        "max_error": max_error,
        "best_loss": min(losses),
        "first_below": below[0] if below else None,
    }


SHOWCASE_STEPS, SHOWCASE_LR, SHOWCASE_POINTS = 8000, 1e-2, 200
# The issue names seeds 0-2; 20 seeds give each setting's rate, which 3 cannot.
SHOWCASE_SEEDS, SHOWCASE_NAMED_SEEDS, SHOWCASE_REACHED = 20, 3, 0.01
# The default, the paper's rules, and issue 11's linear map (the default before
# issue 17 apart from the map; the issue says the showcase held there).
SHOWCASE_SETTINGS: tuple[tuple[str, dict], ...] = (
    ("default", {}),
    ("paper", {"paper": True}),
    ("linear map (issue 11)", {"parametrisation": "linear"}),
)


def showcase(rules: dict, seed: int, steps: int = SHOWCASE_STEPS) -> dict:
    """The issue-17 showcase: Linear(1, 1) -> one ReLU-initialised DEU -> Linear(1, 1)
    learning sin on [-pi, pi] (SHOWCASE_POINTS evenly spaced t), full batch, Adam
    at lr 1e-2, ``steps`` steps; the linear maps are torch's default for ``seed``."""
    seed_everything(seed)
    neuron = deu.DEU(1, init="relu", **rules)
    model = nn.Sequential(nn.Linear(1, 1), neuron, nn.Linear(1, 1))
    t = torch.linspace(-math.pi, math.pi, SHOWCASE_POINTS).unsqueeze(1)
    target = torch.sin(t)
    optimiser = torch.optim.Adam(model.parameters(), lr=SHOWCASE_LR)
    start = neuron.subspaces()[0]
    best, first_below = math.inf, None
    for step in range(steps):
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(model(t), target)
        if not torch.isfinite(loss):
            break
        loss.backward()
        optimiser.step()
        best = min(best, loss.item())
        if first_below is None and loss.item() < 0.01:
            first_below = step
    with torch.no_grad():
        final = float(nn.functional.mse_loss(model(t), target))
    return {
        "seed": seed,
        "final_mse": final,
        "best_mse": best,
        "first step below 0.01": "-" if first_below is None else first_below,
        "left the ReLU subspace": neuron.subspaces()[0] != start,
        "final subspace": neuron.subspaces()[0],
        "coeffs": " ".join(f"{v:.3g}" for v in neuron.coeffs.detach().flatten().tolist()),
    }


def showcase_rates(rows: list[dict], first_seed: int) -> list[dict]:
    """Per setting: how many showcase runs end below SHOWCASE_REACHED, over the
    issue's seeds (the first SHOWCASE_NAMED_SEEDS) and over every seed run."""
    named = range(first_seed, first_seed + SHOWCASE_NAMED_SEEDS)
    out = []
    for setting in dict.fromkeys(row["setting"] for row in rows):
        mine = [row for row in rows if row["setting"] == setting]
        first = [row for row in mine if row["seed"] in named]

        def below(group: list[dict]) -> str:
            return f"{sum(row['final_mse'] < SHOWCASE_REACHED for row in group)}/{len(group)}"

        left = sum(bool(row["left the ReLU subspace"]) for row in mine)
        out.append(
            {
                "setting": setting,
                f"below, first {SHOWCASE_NAMED_SEEDS} seeds": below(first),
                "below, every seed": below(mine),
                "median final MSE": float(np.median([row["final_mse"] for row in mine])),
                "left the ReLU subspace": f"{left}/{len(mine)}",
            }
        )
    return out


def _row(key: str, setting: str, seed: int, result: dict) -> dict:
    a, b, c, c1, c2 = result["coeffs"]
    return {
        "range": LABELS[key],
        "gravitation": setting,
        "seed": seed,
        "a": a,
        "b": b,
        "c": c,
        "c1": c1,
        "c2": c2,
        "final_subspace": result["final_subspace"],
        "subspaces_visited": " > ".join(first_visits(result["visited"])),
        "subspace_changes": len(result["changes"]),
        "abc_travel": result["travel"],
        "final_mse": result["final_mse"],
        "max_abs_error": result["max_error"],
        "first_epoch_mse_below_1e-3": (
            "never" if result["first_below"] is None else result["first_below"]
        ),
        "reaches_sin": "yes" if result["max_error"] < REACHED else "no",
    }


def first_visits(visited: list[str]) -> list[str]:
    seen: list[str] = []
    for name in visited:
        if name not in seen:
            seen.append(name)
    return seen


def plot_range(plt, key: str, shown: list[tuple[str, dict]], epochs: int):
    """One figure per range: a row per (label, run)."""
    import matplotlib as mpl

    columns = ["activation", "a-b", "b-c", "a-c", "loss"]
    figure, axes = plt.subplots(
        len(shown),
        len(columns),
        figsize=(3.2 * len(columns), 3.0 * len(shown)),
        layout="constrained",
        squeeze=False,
    )
    norm = mpl.colors.LogNorm(vmin=1, vmax=max(epochs, 2))
    cmap = mpl.colormaps["viridis"]
    for row, (tag, result) in enumerate(shown):
        dense = result["dense"]
        ax = axes[row, 0]
        for epoch, curve in sorted(result["curves"].items()):
            ax.plot(dense, curve, color=cmap(norm(epoch + 2)), lw=1.0)
        ax.plot(dense, np.sin(dense), "k--", lw=1.2, label="sin(t)")
        ax.set_ylim(-2.5, 2.5)
        ax.set_title("y(t) over training", fontsize=9)
        ax.set_ylabel(tag, fontsize=9, fontweight="bold")
        ax.legend(fontsize=7, loc="lower left")
        ax.set_xlabel("t", fontsize=8)

        path = result["path"]
        change = np.array(result["changes"], dtype=int)
        # Dots at about 1500 epochs, log-spaced (early epochs move most), for a light PNG.
        steps = np.unique(np.geomspace(1, len(path), 1500).astype(int) - 1)
        for col, (i, j) in enumerate([(0, 1), (1, 2), (0, 2)], start=1):
            ax = axes[row, col]
            ax.plot(path[:, i], path[:, j], color="0.75", lw=0.8, zorder=1)
            ax.scatter(
                path[steps, i], path[steps, j], c=steps + 1, cmap=cmap, norm=norm, s=3, zorder=2
            )
            if len(change):
                ax.scatter(
                    path[change, i],
                    path[change, j],
                    marker="x",
                    color="red",
                    s=14,
                    lw=0.8,
                    zorder=3,
                    label="subspace change",
                )
            ax.plot(*path[0, [i, j]], "ks", ms=5, label="start (ReLU)", zorder=4)
            ax.plot(*path[-1, [i, j]], "k*", ms=9, label="end", zorder=4)
            names = "abc"
            ax.set_xlabel(names[i], fontsize=8)
            ax.set_ylabel(names[j], fontsize=8)
            ax.set_title(f"path of ({names[i]}, {names[j]})", fontsize=9)
            ax.axhline(0, color="0.85", lw=0.6, zorder=0)
            ax.axvline(0, color="0.85", lw=0.6, zorder=0)
            if col == 1:
                ax.legend(fontsize=6, loc="best")
        ax = axes[row, 4]
        losses = np.asarray(result["losses"])
        ax.plot(np.arange(1, len(losses) + 1), np.maximum(losses, 1e-16), lw=1.0)
        if losses.max() > 10 * max(losses.min(), 1e-16):
            ax.set_yscale("log")
        else:
            ax.ticklabel_format(axis="y", useOffset=False)
        if len(change):
            ax.vlines(
                change, 0, 1, transform=ax.get_xaxis_transform(), color="red", lw=0.3, alpha=0.3
            )
        ax.set_xscale("log")
        ax.set_xlabel("epoch (red: subspace change)", fontsize=8)
        ax.set_title("training MSE", fontsize=9)
        ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    figure.colorbar(
        mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.6, label="epoch", pad=0.01
    )
    figure.suptitle(
        f"One DEU neuron, ReLU start (a=0, b=1, c=0, c1=c2=0), fits sin(t) on "
        f"t in {LABELS[key]}: Adam lr={LR:g}, {epochs} full-batch epochs",
        fontsize=10,
    )
    return figure


def shrink_png(path: Path) -> Path:
    """Re-save a PNG with a 256-colour palette (the path plots are large as RGBA)."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    palette.save(path, optimize=True)
    return path


def run(args) -> dict:
    setup(args)
    epochs = 40 if args.quick else 20000
    points = 64 if args.quick else 200
    seeds = [args.seed + k for k in range(1 if args.quick else 5)]
    snapshots = snapshot_epochs(epochs, 6 if args.quick else 14)
    plt = pyplot()

    rows = []
    totals = []
    summary: dict = {"epochs": epochs, "lr": LR, "seeds": seeds, "runs": {}}
    for key, span in RANGES.items():
        shown = []
        for setting, rules in SETTINGS:
            tag = f"{key}/{setting}"
            results = []
            for seed in seeds:
                result = fit(
                    span,
                    rules,
                    epochs=epochs,
                    points=points,
                    snapshots=snapshots,
                    description=f"sine {tag} seed {seed}",
                    seed=seed,
                )
                results.append(result)
                rows.append(_row(key, setting, seed, result))
            label = f"gravitation {setting}"
            shown.append((f"{label}, seed {seeds[0]}", results[0]))
            best = min(range(len(results)), key=lambda i: results[i]["final_mse"])
            if setting != "off" and best != 0:
                shown.append((f"{label}, seed {seeds[best]} (best)", results[best]))
            errors = [r["max_error"] for r in results]
            mses = [r["final_mse"] for r in results]
            reached = sum(e < REACHED for e in errors)
            escaped = sum(len(r["changes"]) > 0 for r in results)
            totals.append(
                {
                    "range": LABELS[key],
                    "gravitation": setting,
                    "runs": len(results),
                    "reached_sin": reached,
                    "left_relu_subspace": escaped,
                    "median_abc_travel": float(np.median([r["travel"] for r in results])),
                    "median_final_mse": float(np.median(mses)),
                    "best_final_mse": float(min(mses)),
                    "worst_final_mse": float(max(mses)),
                    "final_subspaces": " ".join(sorted({r["final_subspace"] for r in results})),
                }
            )
            summary["runs"][tag] = {
                "reached_sin": reached,
                "runs": len(results),
                "final_mse": mses,
                "final_subspaces": [r["final_subspace"] for r in results],
            }
        figure = plot_range(plt, key, shown, epochs)
        shrink_png(save_figure(figure, args.out / f"sine_{key}.png"))

    title = (
        f"One ReLU-initialised DEU fitting sin(t): Adam lr={LR:g}, {epochs} full-batch epochs, "
        f"{points} random t per seed; reaches sin = max |y - sin| < {REACHED:g} on the range"
    )
    write_table(args.out, "sine", rows, title=title)
    write_table(args.out, "sine_summary", totals, title=title + f"; seeds {seeds}")
    references = []
    for key, span in RANGES.items():
        dense = torch.linspace(*span, 1001, dtype=torch.float64).unsqueeze(1)
        for coeffs in REFERENCES:
            y = deu.functional.deu(dense, torch.tensor([coeffs], dtype=torch.float64))
            error = y - torch.sin(dense)
            a, b, c, c1, c2 = coeffs
            references.append(
                {
                    "range": LABELS[key],
                    "a": a,
                    "b": b,
                    "c": c,
                    "c1": c1,
                    "c2": c2,
                    "mse": float(error.pow(2).mean()),
                    "max_abs_error": float(error.abs().max()),
                }
            )
    write_table(
        args.out,
        "sine_reference",
        references,
        title="Hand-set sine-like coefficients (not trained): how close a DEU can get",
    )
    showcase_rows = []
    showcase_seeds = range(args.seed, args.seed + (1 if args.quick else SHOWCASE_SEEDS))
    for setting, rules in SHOWCASE_SETTINGS:
        for seed in showcase_seeds:
            result = showcase(rules, seed, steps=50 if args.quick else SHOWCASE_STEPS)
            showcase_rows.append({"setting": setting} | result)
    title = (
        f"Linear -> ReLU-initialised DEU -> Linear, sin on [-pi, pi], Adam lr "
        f"{SHOWCASE_LR:g}, {SHOWCASE_STEPS} full-batch steps"
    )
    write_table(args.out, "sine_showcase", showcase_rows, title=title)
    showcase_summary = showcase_rates(showcase_rows, args.seed)
    write_table(
        args.out,
        "sine_showcase_summary",
        showcase_summary,
        title=f"{title}: runs whose final MSE is below {SHOWCASE_REACHED:g}",
    )
    summary["showcase"] = showcase_rows
    summary["showcase_summary"] = showcase_summary
    summary["figures"] = [str(args.out / f"sine_{key}.png") for key in RANGES]
    return summary
