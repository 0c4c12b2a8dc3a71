"""The Markdown table: its columns, cells and caption."""

from __future__ import annotations

from collections.abc import Sequence

from deu.benchmark.measurement import Row, Settings
from deu.benchmark.populations import MIXED_PROPORTIONS

COLUMNS = (
    "case",
    "path",
    "fwd+bwd ms",
    "fwd+bwd / ReLU",
    "fwd+bwd / PReLU",
    "inference ms",
    "inference / PReLU",
    "inference / exp",
    "fwd+bwd peak MiB",
)


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None:
        return None
    return value / reference


def table_cells(row: Row, references: dict[tuple[str, str], Row]) -> list[str]:
    relu = references.get((row.group, "ReLU"))
    prelu = references.get((row.group, "PReLU"))
    exp = references.get((row.group, "torch.exp"))
    values = (
        row.train_ms,
        _ratio(row.train_ms, relu.train_ms if relu else None),
        _ratio(row.train_ms, prelu.train_ms if prelu else None),
        row.inference_ms,
        _ratio(row.inference_ms, prelu.inference_ms if prelu else None),
        _ratio(row.inference_ms, exp.inference_ms if exp else None),
        row.peak_mb,
    )
    return [row.case, row.path, *map(_number, values)]


def caption(settings: Settings, notes: Sequence[str]) -> list[str]:
    """The method, stated under the table."""
    memory = (
        "torch.cuda.max_memory_allocated"
        if settings.device.type == "cuda"
        else "the peak of the running total of the CPU allocator's allocations and frees "
        "recorded by torch.profiler (profile_memory=True) during the second of two "
        "consecutive calls (so that the sizes of the blocks it frees are known)"
    )
    lines = [
        f"Times: median of up to {settings.repeats} timed runs (time.perf_counter) after at "
        f"least {settings.warmup} untimed warm-up runs lasting at least {settings.warmup_s:g} s; "
        f"fewer timed runs (at least min(3, {settings.repeats})) where they would exceed "
        f"{settings.budget_s:g} s per measurement. "
        "Ratios divide by the ReLU, PReLU and torch.exp rows of the same shape or network, "
        "measured in the same process.",
        "fwd+bwd: forward and backward to the gradients of the input and of every parameter "
        "(PReLU: one weight per neuron; DEU: the (C, 5) coefficients), for a fixed random "
        "output gradient; for the MLP and ResNet rows, one SGD training step. "
        "Inference: the forward pass under torch.inference_mode (networks in eval mode).",
        f"Peak memory: one fwd+bwd, above what was allocated before it; {memory}.",
        "Populations: mixed = "
        + ", ".join(f"{share:.0%} {name}" for name, share in MIXED_PROPORTIONS.items())
        + "; a single subspace name means every neuron in it. The networks' DEUs use the "
        "mixed population.",
        "DEU default is deu.functional.deu with its defaults (outward gravitation on; "
        "backend='auto', the fused CPU kernel on the CPU); DEU generated PyTorch is "
        "backend='torch', eager and under "
        f"torch.compile(deu.functional.deu, backend={settings.compile_backend!r}). "
        "The baselines compute the function of deu.functional.deu(..., gravitation=False), "
        "with autograd for the backward: masked Algorithm 1 evaluates every present "
        "subspace's closed form on every element and selects by mask; the per-neuron loop "
        "evaluates each neuron's closed form on its own slice in a Python loop. Where "
        "the loop is marked 'k of C neurons, xC/k', it was run on the first k neurons (a "
        "random sample: the population is shuffled) and "
        "its times and memory multiplied by C/k (linear extrapolation).",
    ]
    return lines + list(notes)
