"""Broad: does the default DEU train wherever ReLU does, on tasks we did not design for,
and do its neurons change form?

One protocol for every activation. Tasks (data that ships inside packages; no
downloads):

* ``sunspots``: yearly sunspot numbers (statsmodels), a windowed MLP (12 past
  years -> the next, two hidden layers of 64); chronological 70/15/15 split;
  metric: test RSE (root relative squared error, 1.0 is predicting the mean).
* ``elnino``: monthly El Nino sea temperatures (statsmodels), 24 past months ->
  6 months ahead, the same MLP and split; test RSE.
* ``cancer``: breast cancer diagnosis (scikit-learn, 30 features), MLP 64-32,
  stratified 60/20/20 split; test accuracy (%).
* ``wine``: wine cultivars (scikit-learn, 13 features), MLP 64-32; test accuracy.
* ``resnet``: MONAI's ResNet (a library we did not write; basic blocks, one per
  stage, widths 8-16-32-64, no max pool) on the 8x8 digits upsampled to 16x16,
  its ReLUs swapped by ``deu.replace_activations`` (each block calls one
  activation module twice: ``per_call_site=True`` gives each call its own
  coefficients); test accuracy.
* ``regression``: the 6-12-1 net of the stability experiment; test MSE.

Grid, the same for every activation: AdamW (weight decay 0.01, torch's
default) at 1e-3, 3e-3, 1e-2 and SGD with momentum 0.9 at 0.01, 0.03, 0.1;
3 seeds. The setting reported is the one with the best mean validation metric
over seeds (all seeds finite); its test metric is reported as mean ± std.

Columns per task and activation: runs finite; runs improving (last epoch's
mean training loss below the first batch's); the worst spike (largest batch
loss over the first batch's) over the grid; the chosen setting and its test
metric; and, for DEU rows, adaptation at the chosen setting: the fraction of
neurons whose subspace changed between initialisation and the end, and the
median over neurons of the relative change of the activation on [-3, 3]
(||f_end - f_start|| / ||f_start|| on 61 points).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import deu
from deu.experiments._common import progress, seed_everything, write_table
from deu.experiments.stability import _loss, optimiser

# name -> keyword arguments of deu.LazyDEU, or None for a torch activation.
ACTIVATIONS: dict[str, dict | None] = {
    "ReLU": None,
    "PReLU": None,
    "SiLU": None,
    "DEU": {},
    "DEU init=random": {"init": "random"},
    "DEU (paper)": {"paper": True},
}
OPTIMISERS: tuple[tuple[str, float], ...] = (
    *(("AdamW", lr) for lr in (1e-3, 3e-3, 1e-2)),
    *(("SGD", lr) for lr in (0.01, 0.03, 0.1)),
)
SEEDS = 3
TASKS = ("sunspots", "elnino", "cancer", "wine", "resnet", "regression")
# The interval on which the adaptation column compares each neuron's activation.
PROBE = torch.linspace(-3.0, 3.0, 61)


@dataclass
class Task:
    name: str
    x: dict[str, torch.Tensor]  # "train", "val", "test"
    y: dict[str, torch.Tensor]
    # Builds the model for an activation factory (None: the ResNet, see resnet()).
    build: Callable[[Callable[[int], nn.Module]], nn.Module] | None
    batch_size: int
    epochs: int
    classification: bool


def _activation(name: str, width: int) -> nn.Module:
    settings = ACTIVATIONS[name]
    if settings is not None:
        return deu.LazyDEU(**settings)
    if name == "PReLU":
        return nn.PReLU(width)
    return {"ReLU": nn.ReLU, "SiLU": nn.SiLU}[name]()


def mlp(sizes: tuple[int, ...]) -> Callable[[Callable[[int], nn.Module]], nn.Module]:
    def build(activation: Callable[[int], nn.Module]) -> nn.Module:
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(activation(fan_out))
        return nn.Sequential(*layers)

    return build


def _split(n: int, fractions=(0.7, 0.15)) -> tuple[slice, slice, slice]:
    a, b = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    return slice(0, a), slice(a, b), slice(b, n)


def windows(series: np.ndarray, lags: int, horizon: int, quick: bool) -> tuple[dict, dict]:
    """(inputs, targets) of a chronological split, standardised with the training part."""
    x = np.stack([series[i : i + lags] for i in range(len(series) - lags - horizon + 1)])
    y = series[lags + horizon - 1 :][: len(x)]
    parts = _split(len(x))
    mean, std = series[: parts[0].stop + lags].mean(), series[: parts[0].stop + lags].std()
    xs, ys = {}, {}
    for key, part in zip(("train", "val", "test"), parts, strict=True):
        xs[key] = torch.tensor((x[part] - mean) / std, dtype=torch.float32)
        ys[key] = torch.tensor((y[part] - mean) / std, dtype=torch.float32).unsqueeze(1)
        if quick:
            xs[key], ys[key] = xs[key][:40], ys[key][:40]
    return xs, ys


def tabular(features: np.ndarray, labels: np.ndarray, quick: bool) -> tuple[dict, dict]:
    """A stratified 60/20/20 split (fixed seed), standardised with the training part."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train, rest = train_test_split(index, test_size=0.4, stratify=labels, random_state=0)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=0)
    mean, std = features[train].mean(0), features[train].std(0) + 1e-12
    xs, ys = {}, {}
    for key, part in (("train", train), ("val", val), ("test", test)):
        if quick:
            part = part[:40]
        xs[key] = torch.tensor((features[part] - mean) / std, dtype=torch.float32)
        ys[key] = torch.tensor(labels[part], dtype=torch.long)
    return xs, ys


def resnet(name: str) -> nn.Module:
    """MONAI's ResNet with its ReLUs replaced as a user would: a DEU per call site
    (deu.replace_activations), one PReLU per module (its two calls share the
    slope), SiLU everywhere."""
    from monai.networks.nets import ResNet

    model = ResNet(
        block="basic",
        layers=[1, 1, 1, 1],
        block_inplanes=[8, 16, 32, 64],
        spatial_dims=2,
        n_input_channels=1,
        conv1_t_size=3,
        conv1_t_stride=1,
        no_max_pool=True,
        num_classes=10,
    )
    settings = ACTIVATIONS[name]
    if settings is not None:
        return deu.replace_activations(model, (nn.ReLU,), per_call_site=True, **settings)
    if name != "ReLU":
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, nn.ReLU):
                    setattr(parent, child_name, nn.PReLU() if name == "PReLU" else nn.SiLU())
    return model


def load(name: str, quick: bool) -> Task:
    import statsmodels.api as sm
    from sklearn import datasets

    if name == "sunspots":
        series = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(float)
        x, y = windows(series, 12, 1, quick)
        return Task(name, x, y, mlp((12, 64, 64, 1)), 32, 3 if quick else 100, False)
    if name == "elnino":
        table = sm.datasets.elnino.load_pandas().data
        series = table.drop(columns="YEAR").to_numpy(float).reshape(-1)
        x, y = windows(series, 24, 6, quick)
        return Task(name, x, y, mlp((24, 64, 64, 1)), 32, 3 if quick else 60, False)
    if name == "cancer":
        data = datasets.load_breast_cancer()
        x, y = tabular(data.data, data.target, quick)
        return Task(name, x, y, mlp((30, 64, 32, 2)), 32, 3 if quick else 40, True)
    if name == "wine":
        data = datasets.load_wine()
        x, y = tabular(data.data, data.target, quick)
        return Task(name, x, y, mlp((13, 64, 32, 3)), 16, 3 if quick else 60, True)
    if name == "resnet":
        data = datasets.load_digits()
        images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
        images = nn.functional.interpolate(images, size=16, mode="bilinear")
        x, y = tabular(images.flatten(1).numpy(), data.target, quick)
        x = {k: (v.reshape(-1, 1, 16, 16) * 0.3) for k, v in x.items()}
        return Task(name, x, y, None, 64, 1 if quick else 6, True)
    if name == "regression":
        from deu.experiments.stability import regression_data

        n_train = 64 if quick else 512
        x_train, y_train, x_rest, y_rest = regression_data(n_train, n_train)
        half = len(x_rest) // 2
        x = {"train": x_train, "val": x_rest[:half], "test": x_rest[half:]}
        y = {"train": y_train, "val": y_rest[:half], "test": y_rest[half:]}
        return Task(name, x, y, mlp((6, 12, 1)), 32, 3 if quick else 40, False)
    raise ValueError(f"task must be one of {TASKS}, got {name!r}")


def _metric(task: Task, model: nn.Module, split: str) -> float:
    model.eval()
    with torch.no_grad():
        output = model(task.x[split])
    model.train()
    target = task.y[split]
    if task.classification:
        return 100.0 * float((output.argmax(1) == target).float().mean())
    # Root relative squared error against predicting the split's own mean.
    return float(
        ((output - target) ** 2).sum().sqrt() / ((target - target.mean()) ** 2).sum().sqrt()
    )


def _deu_snapshot(model: nn.Module) -> list[tuple[list[str], torch.Tensor]]:
    """Per DEU layer: each neuron's subspace and its activation on PROBE."""
    shots = []
    for layer in model.modules():
        if isinstance(layer, deu.DEU) and layer.num_neurons:
            with torch.no_grad():
                probe = PROBE.reshape(-1, 1).expand(-1, layer.num_neurons).contiguous()
                values = deu.functional.deu(
                    probe,
                    layer.coeffs.detach(),
                    epsilon=layer.epsilon,
                    steepness=layer.steepness,
                    max_exponent=layer.max_exponent,
                    max_value=layer.max_value,
                    critical=layer.critical,
                )
            shots.append((layer.subspaces(), values.T.clone()))
    return shots


def adaptation(start, end) -> tuple[float, float]:
    """(fraction of neurons that changed subspace, median relative change on PROBE)."""
    changed, total, relative = 0, 0, []
    for (names0, f0), (names1, f1) in zip(start, end, strict=True):
        changed += sum(a != b for a, b in zip(names0, names1, strict=True))
        total += len(names0)
        relative += ((f1 - f0).norm(dim=1) / f0.norm(dim=1).clamp(min=1e-12)).tolist()
    if not total:
        return math.nan, math.nan
    return changed / total, float(np.median(relative))


def train_run(task: Task, activation: str, opt: str, lr: float, seed: int) -> dict:
    """One run; stops at the first non-finite batch loss or refused coefficients."""
    seed_everything(seed)
    if task.build is None:
        model = resnet(activation)
    else:
        model = task.build(lambda width: _activation(activation, width))
    # The dry run the lazy layers need, in eval mode and without gradients.
    deu.materialize(model, task.x["train"][:2])
    start = _deu_snapshot(model)
    optim = optimiser(opt, model.parameters(), lr)
    generator = torch.Generator().manual_seed(seed)
    x, y = task.x["train"], task.y["train"]
    losses: list[float] = []
    last_epoch: list[float] = []
    finite = True
    for _ in range(task.epochs):
        order = torch.randperm(len(x), generator=generator)
        last_epoch = []
        for begin in range(0, len(x), task.batch_size):
            index = order[begin : begin + task.batch_size]
            optim.zero_grad()
            try:
                loss = _loss(task, model(x[index]), y[index])
            except deu.CoefficientsDiverged:
                finite = False
                break
            if not torch.isfinite(loss):
                finite = False
                break
            loss.backward()
            optim.step()
            losses.append(loss.item())
            last_epoch.append(losses[-1])
        if not finite:
            break
    val = test = math.nan
    changed = relative = math.nan
    if finite:
        try:
            val, test = _metric(task, model, "val"), _metric(task, model, "test")
            if start:
                changed, relative = adaptation(start, _deu_snapshot(model))
        except deu.CoefficientsDiverged:
            finite = False
        finite = finite and math.isfinite(val) and math.isfinite(test)
    initial = losses[0] if losses else math.nan
    return {
        "finite": finite,
        "improved": finite and bool(last_epoch) and float(np.mean(last_epoch)) < initial,
        "spike": max(losses) / initial if losses else math.nan,
        "val": val,
        "test": test,
        "changed subspace": changed,
        "relative change": relative,
        "steps": len(losses),
    }


def _job(job: tuple) -> dict:
    task_name, activation, opt, lr, seed, quick = job
    torch.set_num_threads(1)
    task = _TASK_CACHE.get(task_name) or _TASK_CACHE.setdefault(task_name, load(task_name, quick))
    result = train_run(task, activation, opt, lr, seed)
    keys = {"task": task_name, "activation": activation, "optimiser": opt, "lr": lr, "seed": seed}
    return keys | result


_TASK_CACHE: dict[str, Task] = {}


def grid(
    task_names, activations, optimisers, seeds: int, base_seed: int, quick: bool, jobs: int
) -> list[dict]:
    work = [
        (task, name, opt, lr, seed, quick)
        for task in task_names
        for name in activations
        for opt, lr in optimisers
        for seed in range(base_seed, base_seed + seeds)
    ]
    if jobs <= 1:
        return [_job(job) for job in progress(work, "broad")]
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return list(progress(pool.imap(_job, work), "broad", total=len(work)))


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}g}"


def chosen(group: list[dict], classification: bool) -> tuple[str, list[dict]] | None:
    """The setting with the best mean validation metric (all seeds finite)."""
    best = None
    for setting in dict.fromkeys((r["optimiser"], r["lr"]) for r in group):
        runs = [r for r in group if (r["optimiser"], r["lr"]) == setting]
        if not all(r["finite"] for r in runs):
            continue
        score = float(np.mean([r["val"] for r in runs])) * (-1 if classification else 1)
        if best is None or score < best[0]:
            best = (score, f"{setting[0]} {setting[1]:g}", runs)
    return None if best is None else (best[1], best[2])


def summary_table(runs: list[dict], classification: dict[str, bool]) -> list[dict]:
    rows = []
    for task in dict.fromkeys(r["task"] for r in runs):
        reference = [r for r in runs if r["task"] == task and r["activation"] == "ReLU"]
        relu_finite = {(r["optimiser"], r["lr"], r["seed"]) for r in reference if r["finite"]}
        relu_worst = max((r["spike"] for r in reference if r["finite"]), default=math.nan)
        relu_pick = chosen(reference, classification[task])
        relu_tests = [r["test"] for r in relu_pick[1]] if relu_pick else []
        for name in dict.fromkeys(r["activation"] for r in runs if r["task"] == task):
            group = [r for r in runs if r["task"] == task and r["activation"] == name]
            exceptions = sum(
                1
                for r in group
                if (r["optimiser"], r["lr"], r["seed"]) in relu_finite and not r["finite"]
            )
            spikes = [r["spike"] for r in group if r["finite"]]
            pick = chosen(group, classification[task])
            tests = [r["test"] for r in pick[1]] if pick else []
            verdict = "-"
            if tests and relu_tests and name != "ReLU":
                mean, std = float(np.mean(tests)), float(np.std(tests))
                relu_mean = float(np.mean(relu_tests))
                better = (mean - relu_mean) * (1 if classification[task] else -1)
                spread = max(std, float(np.std(relu_tests)))
                verdict = (
                    "better" if better > spread else "worse" if -better > spread else "within 1 sd"
                )
            adapt = pick[1] if pick else []
            rows.append(
                {
                    "task": task,
                    "activation": name,
                    "runs finite": f"{sum(r['finite'] for r in group)}/{len(group)}",
                    "not finite where ReLU is": exceptions,
                    "runs improving": f"{sum(r['improved'] for r in group)}/{len(group)}",
                    "worst spike": _fmt(max(spikes) if spikes else math.nan),
                    "x ReLU's worst": _fmt(
                        max(spikes) / relu_worst if spikes and relu_worst > 0 else math.nan, 2
                    ),
                    "chosen (validation)": pick[0] if pick else "none finite",
                    "test metric": (
                        f"{np.mean(tests):.4g} ± {np.std(tests):.2g}" if tests else "-"
                    ),
                    "vs ReLU": verdict,
                    "neurons changed subspace": _fmt(
                        float(np.mean([r["changed subspace"] for r in adapt]))
                        if adapt
                        else math.nan
                    ),
                    "median relative change": _fmt(
                        float(np.mean([r["relative change"] for r in adapt])) if adapt else math.nan
                    ),
                }
            )
    return rows


def per_setting_table(runs: list[dict]) -> list[dict]:
    rows = []
    keys = dict.fromkeys((r["task"], r["activation"], r["optimiser"], r["lr"]) for r in runs)
    for key in keys:
        group = [r for r in runs if (r["task"], r["activation"], r["optimiser"], r["lr"]) == key]
        tests = [r["test"] for r in group if r["finite"]]
        rows.append(
            {
                "task": key[0],
                "activation": key[1],
                "optimiser": key[2],
                "lr": key[3],
                "finite": f"{sum(r['finite'] for r in group)}/{len(group)}",
                "worst spike": _fmt(max(r["spike"] for r in group)),
                "test mean": _fmt(float(np.mean(tests)) if tests else math.nan, 4),
            }
        )
    return rows


def run(args) -> dict:
    quick = args.quick
    names: tuple[str, ...] = ("sunspots", "cancer") if quick else TASKS
    only = os.environ.get("DEU_BROAD_TASKS")
    if only:
        names = tuple(only.split(","))
    activations: tuple[str, ...] = ("ReLU", "DEU") if quick else tuple(ACTIVATIONS)
    optimisers = OPTIMISERS[:1] + OPTIMISERS[-1:] if quick else OPTIMISERS
    jobs = int(os.environ.get("DEU_JOBS", "1"))
    runs = grid(names, activations, optimisers, 1 if quick else SEEDS, args.seed, quick, jobs)
    classification = {name: load(name, True).classification for name in names}
    write_table(args.out, "broad_runs", runs, floatfmt=".4g")
    write_table(args.out, "broad_settings", per_setting_table(runs), "Every setting")
    summary = summary_table(runs, classification)
    text = write_table(args.out, "broad", summary, "The broad grid")
    print(text)
    return {"runs": runs, "summary": summary}
