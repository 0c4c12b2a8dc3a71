"""Speed and memory of the DEU activation against ReLU, PReLU and two baselines.

Run ``python -m deu.benchmark`` (``make bench``); ``--quick`` is a seconds-long
smoke run with tiny shapes.  One Markdown table is printed, every number in it
measured in this process:

* **Activation cases**, a ``(512, 1024)`` and a conv-shaped ``(32, 64, 32, 32)``
  float32 input (neuron axis 1): ReLU, PReLU (one weight per neuron), one
  ``torch.exp`` over the tensor (the floor for the transcendental work), and
  the DEU paths on a mixed population of neurons and on each single-subspace
  population.  On the mixed population two baselines are measured as well:

  - the masked "every subspace on every element" method of the paper's
    Algorithm 1 (:func:`masked_every_subspace`);
  - the paper's per-neuron loop (:func:`per_neuron_loop`), timed on a subset of
    the neurons and extrapolated linearly to all of them.

* **Training cases**: one SGD step (forward, cross-entropy, backward, update)
  of a 784-1024-512-10 MLP at batch 256 and of the paper's stunted ResNet-18
  on 32x32 inputs, with ReLU, PReLU or DEU activations.

* **GPU cases** (issue 12), only where a CUDA or ROCm device is present
  (otherwise the output says that they were not run, and why): ``(8192,
  4096)`` float32 on the mixed population, ReLU, PReLU, ``torch.exp``, a
  device-to-device copy (its bandwidth, and each forward's traffic over its
  time as a fraction of it), the DEU with the Triton kernels, the generated
  PyTorch kernels eager and the same kernels compiled by inductor inside the
  operator (:func:`in_operator_compiled`).  ``--gpu`` runs only these (with
  ``--device cpu``: on CPU tensors, for the tests).

"fwd+bwd" is a forward and a backward pass to the gradients of the input and
of every parameter (for the training cases: the whole training step);
"inference" is a forward pass under ``torch.inference_mode``.  Times are the
median of repeated runs after warm-up runs (``time.perf_counter``, with CUDA
synchronised around every run).  Peak memory is that of one fwd+bwd above
what was allocated before it (see :func:`peak_memory_mb`).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn

from deu import functional
from deu._generated import SUBSPACES
from deu._plan import (
    _OUTPUT_OF_COEFF,
    _assemble,
    _groups,
    _neuron_quantities,
    _neuron_shape,
    _reduce,
    _take,
    summed_outputs,
)
from deu._plan import Settings as _OperatorSettings
from deu._subspaces import SUBSPACE_NAMES, classify, unclassified_error
from deu.module import DEU

# The runtime's defaults (epsilon, steepness, max_value, critical, ...), which the
# baselines share so that they compute the same function.
# The functional form's keyword defaults (epsilon, critical, max_value, ...).
DEFAULTS: dict[str, Any] = dict(functional.deu.__kwdefaults__ or {})

# One point well inside each subspace, as (a, b, c).  Populations are drawn
# around them (+-5%), and the masked baseline evaluates them in the lanes of
# neurons outside a subspace.
INSIDE_POINTS: dict[str, tuple[float, float, float]] = {
    "a0_b0_c": (0.0, 0.0, 1.0),
    "a0_b_c0": (0.0, 1.0, 0.0),
    "a0_b_c": (0.0, 1.0, 1.0),
    "a_b0_c0": (1.0, 0.0, 0.0),
    "a_b0_c_pos": (1.0, 0.0, 1.0),
    "a_b0_c_neg": (1.0, 0.0, -1.0),
    "a_b_c0": (1.0, 1.0, 0.0),
    "a_b_c_disc_pos": (0.5, 2.0, 0.5),
    "a_b_c_disc_zero": (1.0, 2.0, 1.0),
    "a_b_c_disc_neg": (1.0, 0.5, 1.0),
}

# The mixed population of the issue: 40% damped oscillation, 20% overdamped,
# 10% ReLU-like (a = c = 0), 10% undamped oscillation (b = 0), 10% first order
# (a = 0), and the remaining 10% shared equally by the other five subspaces.
_MAIN_SHARES = {
    "a_b_c_disc_neg": 0.4,
    "a_b_c_disc_pos": 0.2,
    "a0_b_c0": 0.1,
    "a_b0_c_pos": 0.1,
    "a0_b_c": 0.1,
}
_OTHERS = [name for name in SUBSPACE_NAMES if name not in _MAIN_SHARES]
MIXED_PROPORTIONS: dict[str, float] = {
    name: _MAIN_SHARES.get(name, 0.1 / len(_OTHERS)) for name in SUBSPACE_NAMES
}


# --------------------------------------------------------------------------
# Populations of neurons
# --------------------------------------------------------------------------


def subspace_population(
    name: str, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(n, 5)`` float64 coefficients of n neurons in subspace ``name``.

    (a, b, c) are the subspace's inside point scaled by 1 +- 5% per neuron
    (critically damped ones put back on b^2 = 4ac); c1, c2 are uniform in
    [-0.5, 0.5].
    """
    base = torch.tensor(INSIDE_POINTS[name], dtype=torch.float64)
    jitter = torch.rand(n, 3, generator=generator, dtype=torch.float64) - 0.5
    abc = base * (1 + 0.1 * jitter)
    if name == "a_b_c_disc_zero":
        abc[:, 2] = abc[:, 1] ** 2 / (4 * abc[:, 0])
    initial = torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5
    return torch.cat([abc, initial], dim=1)


def neuron_counts(n: int, proportions: dict[str, float]) -> dict[str, int]:
    """Split n neurons by ``proportions`` (largest remainder: each count is
    within one neuron of its exact share, and the counts sum to n)."""
    exact = {name: share * n for name, share in proportions.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: counts[name] - exact[name])
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    return counts


def mixed_population(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 5)`` float64 coefficients in :data:`MIXED_PROPORTIONS`, neurons
    of different subspaces interleaved in random order."""
    counts = neuron_counts(n, MIXED_PROPORTIONS)
    coeffs = torch.cat([subspace_population(name, k, generator) for name, k in counts.items()])
    return coeffs[torch.randperm(n, generator=generator)]


# --------------------------------------------------------------------------
# Baselines: the same function as deu.functional.deu(..., gravitation=False),
# computed the ways the paper describes, with autograd through ordinary torch ops.
# --------------------------------------------------------------------------


def _neuron_axis_shape(x: torch.Tensor, dim: int) -> list[int]:
    """Shape that broadcasts a per-neuron vector against ``x`` along ``dim``."""
    return [-1] + [1] * (x.dim() - dim % x.dim() - 1)


def _effective_coefficients(coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(coefficients the kernels see, subspace index per neuron).

    The runtime's classification; the gradient passes straight through to the
    raw coefficients, as the runtime's does (a coefficient that counts as zero
    gets no gradient because its kernel does not read it).
    """
    effective, index = classify(coeffs.detach(), DEFAULTS["epsilon"], DEFAULTS["critical"])
    return coeffs + (effective - coeffs).detach(), index


def _clamp(y: torch.Tensor) -> torch.Tensor:
    return y.clamp(-DEFAULTS["max_value"], DEFAULTS["max_value"])


def masked_every_subspace(x: torch.Tensor, coeffs: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
    """The paper's Algorithm 1: every present subspace's closed form on every element.

    For each subspace S with at least one neuron: ``output += mask_S * f_S(x)``,
    with f_S evaluated over the whole input for every neuron, ignoring whether
    the neuron is in S.  To keep the lanes of neurons outside S finite (and
    their gradients free of 0 * inf), those neurons' coefficients are replaced
    by a point inside S before f_S is evaluated; the per-element work is
    unchanged.  The backward pass is autograd's through all of it.
    """
    effective, index = _effective_coefficients(coeffs)
    shape = _neuron_axis_shape(x, dim)
    output = torch.zeros_like(x)
    for s, subspace in enumerate(SUBSPACES):
        mask = index == s
        if not bool(mask.any()):  # Algorithm 1, line 5 (one host sync per subspace)
            continue
        inside = torch.tensor(
            (*INSIDE_POINTS[subspace.name], 0.0, 0.0), dtype=coeffs.dtype, device=coeffs.device
        )
        lanes = torch.where(mask.unsqueeze(1), effective, inside)
        k = subspace.neuron(
            *(lanes[:, j].reshape(shape) for j in range(5)),
            DEFAULTS["steepness"],
            DEFAULTS["max_exponent"],
        )
        output = output + mask.to(x.dtype).reshape(shape) * subspace.value(x, k)
    return _clamp(output)


def per_neuron_loop(x: torch.Tensor, coeffs: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
    """The direct way the paper describes, "iterating over all neurons and computing
    the corresponding activation values individually": a Python loop.

    Each neuron's subspace is chosen on the host and its closed form is
    evaluated on its own slice of the input, with the per-neuron quantities
    computed from that neuron's (0-d) coefficient tensors; the slices are
    stacked back.  The backward pass is autograd's through the whole loop.
    The classification itself runs once, vectorised, which favours this
    baseline.
    """
    effective, index = _effective_coefficients(coeffs)
    columns = []
    for i, s in enumerate(index.tolist()):
        subspace = SUBSPACES[s]
        k = subspace.neuron(*effective[i].unbind(), DEFAULTS["steepness"], DEFAULTS["max_exponent"])
        columns.append(subspace.value(x.select(dim, i), k))
    return _clamp(torch.stack(columns, dim=dim))


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(
    step: Callable[[], object],
    device: torch.device,
    *,
    repeats: int,
    warmup: int,
    warmup_s: float,
    budget_s: float,
) -> float:
    """Median wall time of ``step`` in ms.

    Untimed warm-up calls first: ``warmup`` of them, and more until ``warmup_s``
    has passed (the first calls in a process are slower while the allocator
    and the thread pool settle).  Then ``repeats`` timed calls, but no more
    than fit in ``budget_s`` (judged by the first timed call) and never fewer
    than min(3, repeats): slow baselines get fewer repeats.
    """
    calls, start = 0, time.perf_counter()
    while calls < warmup or time.perf_counter() - start < warmup_s:
        step()
        calls += 1
    times: list[float] = []
    wanted = repeats
    while len(times) < wanted:
        _synchronize(device)
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
        if len(times) == 1:
            wanted = max(min(3, repeats), min(repeats, int(budget_s / times[0])))
    return 1e3 * statistics.median(times)


_MEASURED_CALL = "deu.benchmark: measured call"


@contextmanager
def _without_profiler_notices():
    """Drop the "USDT: ... profiler_start / profiler_stop" lines that the
    profiler's C++ side writes to the process's stderr (two per measurement);
    every other line written to stderr meanwhile is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not line.startswith("USDT:"):
                    sys.stderr.write(line)


def peak_memory_mb(step: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory allocated during one call of ``step``, above what was
    allocated before it (frees of earlier blocks count), in MiB.

    CUDA: ``torch.cuda.max_memory_allocated``.  CPU: the allocator's
    allocation and free events recorded by ``torch.profiler`` with
    ``profile_memory=True`` during the second of two calls, summed in time
    order; the peak of that running total.  (The profiler knows the size of a
    freed block only if it saw the allocation, hence the first call: what the
    measured call frees, such as the previous gradients, was allocated by it.)
    None if the profiler's events cannot be read.
    """
    if device.type == "cuda":
        _synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with (
        _without_profiler_notices(),
        torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        ) as profiler,
    ):
        step()
        with torch.profiler.record_function(_MEASURED_CALL):
            step()
    try:
        events = profiler.profiler.kineto_results.events()
    except AttributeError:
        return None
    marks = [e for e in events if e.name() == _MEASURED_CALL]
    if not marks:
        return None
    begin, end = marks[0].start_ns(), marks[0].end_ns()
    changes = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and begin <= e.start_ns() <= end
    )
    running = peak = 0
    for _, nbytes in changes:
        running += nbytes
        peak = max(peak, running)
    return peak / 2**20


@dataclass(frozen=True)
class Workload:
    """One row of the table: what to run for fwd+bwd and for inference.

    ``group`` names the rows whose ReLU, PReLU and torch.exp rows are this
    row's references.  ``scale`` multiplies the measured times and memory (the
    per-neuron loop, timed on a subset of the neurons).  A failure of an
    ``optional`` workload is reported in a note instead of stopping the run.
    """

    group: str
    case: str
    path: str
    train_step: Callable[[], object] | None
    inference_step: Callable[[], object] | None
    scale: float = 1.0
    optional: bool = False


@dataclass(frozen=True)
class Row:
    group: str
    case: str
    path: str
    train_ms: float | None
    inference_ms: float | None
    peak_mb: float | None


@dataclass(frozen=True)
class Settings:
    """Everything that differs between the full run and ``--quick``."""

    activation_shapes: tuple[tuple[int, ...], ...]
    loop_neurons: int  # the per-neuron loop is timed on at most this many neurons
    mlp_widths: tuple[int, ...]
    mlp_batch: int
    conv_widths: tuple[int, int]
    conv_batch: int
    image_size: int
    repeats: int
    warmup: int  # at least this many untimed calls, and for at least warmup_s
    warmup_s: float
    budget_s: float  # per measurement; slow paths get fewer repeats
    compile_backend: str
    device: torch.device


def full_settings(device: torch.device) -> Settings:
    # The GPU shape of issue 12 has its own section (gpu_workloads).
    shapes: tuple[tuple[int, ...], ...] = ((512, 1024), (32, 64, 32, 32))
    return Settings(
        activation_shapes=shapes,
        # All neurons of the CPU shapes (about 1 s a call at 1024 neurons); timing 128
        # and extrapolating linearly underestimated the 1024-neuron time by 1.6x.
        loop_neurons=1024,
        mlp_widths=(784, 1024, 512, 10),
        mlp_batch=256,
        # The paper's batch is 128; 32 keeps the CPU run short.
        conv_widths=(64, 128),
        conv_batch=128 if device.type == "cuda" else 32,
        image_size=32,
        repeats=25,
        warmup=2,
        warmup_s=0.25,
        budget_s=2.0,
        compile_backend="inductor",
        device=device,
    )


def quick_settings(device: torch.device) -> Settings:
    return Settings(
        activation_shapes=((8, 16), (2, 8, 4, 4)),
        loop_neurons=4,
        mlp_widths=(784, 32, 16, 10),
        mlp_batch=8,
        conv_widths=(8, 16),
        conv_batch=2,
        image_size=8,
        repeats=1,
        warmup=1,
        warmup_s=0.0,
        budget_s=0.1,
        # Inductor's first compilation alone takes longer than a quick run.
        compile_backend="eager",
        device=device,
    )


def measure(workload: Workload, settings: Settings) -> Row:
    """Time and profile one workload (see the module docstring for how)."""

    def timed(step: Callable[[], object] | None) -> float | None:
        if step is None:
            return None
        ms = median_ms(
            step,
            settings.device,
            repeats=settings.repeats,
            warmup=settings.warmup,
            warmup_s=settings.warmup_s,
            budget_s=settings.budget_s,
        )
        return ms * workload.scale

    def peak() -> float | None:
        if workload.train_step is None:
            return None
        mb = peak_memory_mb(workload.train_step, settings.device)
        return None if mb is None else mb * workload.scale

    train_ms, inference_ms = timed(workload.train_step), timed(workload.inference_step)
    return Row(workload.group, workload.case, workload.path, train_ms, inference_ms, peak())


# --------------------------------------------------------------------------
# Activation cases
# --------------------------------------------------------------------------


def activation_workload(
    group: str,
    case: str,
    path: str,
    apply: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    parameters: Sequence[torch.Tensor] = (),
    *,
    scale: float = 1.0,
    optional: bool = False,
) -> Workload:
    """fwd+bwd: ``apply(x)`` and its gradients in x and ``parameters`` for a fixed
    random output gradient.  Inference: ``apply(x)`` under inference mode."""
    x_grad = x.detach().clone().requires_grad_()
    inputs = [x_grad, *parameters]
    grad_output = torch.randn_like(x)

    def train_step():
        return torch.autograd.grad(apply(x_grad), inputs, grad_output)

    def inference_step():
        with torch.inference_mode():
            return apply(x)

    return Workload(group, case, path, train_step, inference_step, scale, optional)


def _shape_name(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def reference_workloads(x: torch.Tensor, group: str) -> Iterator[Workload]:
    """ReLU, PReLU (one learned weight per neuron) and one torch.exp (inference only)."""
    weight = torch.full((x.shape[1],), 0.25, device=x.device, requires_grad=True)
    yield activation_workload(group, group, "ReLU", torch.relu, x)
    yield activation_workload(group, group, "PReLU", lambda t: nnf.prelu(t, weight), x, [weight])

    def exp_step():
        with torch.inference_mode():
            return torch.exp(x)

    yield Workload(group, group, "torch.exp", None, exp_step)


def deu_workloads(
    x: torch.Tensor, coeffs: torch.Tensor, group: str, case: str, settings: Settings
) -> Iterator[Workload]:
    """The DEU paths, gravitation on: the default (backend="auto": the fused
    CPU kernel on the CPU), the generated PyTorch kernels eager, and their
    torch.compile."""
    c = coeffs.detach().clone().requires_grad_()
    if x.device.type == "cpu":
        yield activation_workload(
            group, case, DEFAULT_PATH, lambda t: functional.deu(t, c), x, [c], optional=True
        )
    yield activation_workload(
        group, case, TORCH_PATH, lambda t: functional.deu(t, c, backend="torch"), x, [c]
    )
    compiled = torch.compile(functional.deu, backend=settings.compile_backend)
    yield activation_workload(
        group,
        case,
        # torch.compile sees the custom operator whole: the generated kernels inside it
        # run eagerly (the in-operator compiled path is IN_OPERATOR_PATH, GPU section).
        f"DEU operator under torch.compile ({settings.compile_backend})",
        lambda t: compiled(t, c, backend="torch"),
        x,
        [c],
        optional=True,
    )


# The two DEU paths the targets are about.
DEFAULT_PATH = "DEU default (fused CPU kernel)"
TORCH_PATH = "DEU generated PyTorch, eager"


def baseline_workloads(
    x: torch.Tensor, coeffs: torch.Tensor, group: str, case: str, settings: Settings
) -> Iterator[Workload]:
    """The runtime without gravitation (what the baselines compute), the masked
    Algorithm 1 and the per-neuron loop (on a subset of the neurons)."""
    c = coeffs.detach().clone().requires_grad_()
    if x.device.type == "cpu":
        yield activation_workload(
            group,
            case,
            f"{DEFAULT_PATH}, no gravitation",
            lambda t: functional.deu(t, c, gravitation=False),
            x,
            [c],
            optional=True,
        )
    yield activation_workload(
        group,
        case,
        f"{TORCH_PATH}, no gravitation",
        lambda t: functional.deu(t, c, gravitation=False, backend="torch"),
        x,
        [c],
    )
    yield activation_workload(
        group, case, "masked Algorithm 1 (baseline)", lambda t: masked_every_subspace(t, c), x, [c]
    )
    neurons = x.shape[1]
    subset = min(neurons, settings.loop_neurons)
    x_subset = x.narrow(1, 0, subset).contiguous()
    c_subset = coeffs[:subset].detach().clone().requires_grad_()
    label = "per-neuron loop (baseline)"
    if subset < neurons:
        label = f"per-neuron loop (baseline; {subset} of {neurons} neurons, x{neurons / subset:g})"
    yield activation_workload(
        group,
        case,
        label,
        lambda t: per_neuron_loop(t, c_subset),
        x_subset,
        [c_subset],
        scale=neurons / subset,
    )


def activation_workloads(settings: Settings) -> Iterator[Workload]:
    generator = torch.Generator().manual_seed(0)
    dtype, device = torch.float32, settings.device
    for shape in settings.activation_shapes:
        group = _shape_name(shape)
        x = torch.randn(shape, generator=generator).to(device, dtype)
        yield from reference_workloads(x, group)
        neurons = shape[1]
        mixed = mixed_population(neurons, generator).to(device, dtype)
        yield from deu_workloads(x, mixed, group, f"{group} mixed", settings)
        yield from baseline_workloads(x, mixed, group, f"{group} mixed", settings)
        for name in SUBSPACE_NAMES:
            coeffs = subspace_population(name, neurons, generator).to(device, dtype)
            yield from deu_workloads(x, coeffs, group, f"{group} {name}", settings)


# --------------------------------------------------------------------------
# Training cases
# --------------------------------------------------------------------------

ActivationFactory = Callable[[int], nn.Module]


def _deu_activation(channels: int, backend: str = "auto") -> nn.Module:
    generator = torch.Generator().manual_seed(channels)
    return DEU(channels, init=mixed_population(channels, generator).float(), backend=backend)


def _deu_torch_activation(channels: int) -> nn.Module:
    return _deu_activation(channels, backend="torch")


ACTIVATIONS: dict[str, ActivationFactory] = {
    "ReLU": lambda channels: nn.ReLU(),
    "PReLU": lambda channels: nn.PReLU(channels),
    "DEU": _deu_activation,
    "DEU (generated PyTorch kernels)": _deu_torch_activation,
}


def mlp(widths: Sequence[int], activation: ActivationFactory) -> nn.Sequential:
    """Linear layers of the given widths, an activation after each hidden one."""
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nn.Linear(width_in, width_out))
        if i < len(widths) - 2:
            layers.append(activation(width_out))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, an activation after each, with a
    1x1 projection on the shortcut when the shape changes."""

    def __init__(self, width_in: int, width_out: int, stride: int, activation: ActivationFactory):
        super().__init__()
        self.conv1 = nn.Conv2d(width_in, width_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width_out)
        self.act1 = activation(width_out)
        self.conv2 = nn.Conv2d(width_out, width_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width_out)
        self.act2 = activation(width_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or width_in != width_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(width_in, width_out, 1, stride, bias=False), nn.BatchNorm2d(width_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(y)) + self.shortcut(x))


def stunted_resnet(widths: tuple[int, int], activation: ActivationFactory) -> nn.Sequential:
    """The paper's stunted ResNet-18: CIFAR ResNet-18 without its 256- and
    512-wide stages (678k parameters with ReLU at widths (64, 128))."""
    narrow, wide = widths
    return nn.Sequential(
        nn.Conv2d(3, narrow, 3, 1, 1, bias=False),
        nn.BatchNorm2d(narrow),
        activation(narrow),
        BasicBlock(narrow, narrow, 1, activation),
        BasicBlock(narrow, narrow, 1, activation),
        BasicBlock(narrow, wide, 2, activation),
        BasicBlock(wide, wide, 1, activation),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(wide, 10),
    )


def calibrate_batch_norm(model: nn.Module, inputs: torch.Tensor) -> None:
    """Set every batch norm's running statistics to those of ``inputs``.

    An untrained network's running statistics (mean 0, variance 1) would leave
    eval mode's activations unnormalised, growing layer by layer to thousands,
    which is not what a trained network's inference sees.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: after one batch, that batch's statistics
    model.train()
    with torch.no_grad():
        model(inputs)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


def training_workload(
    group: str, path: str, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
) -> Workload:
    """fwd+bwd: one SGD step (forward, cross-entropy, backward, update).
    Inference: the forward pass in eval mode under inference mode.

    The learning rate is 0, so that every timed step sees the same weights and
    DEU coefficients (the update's arithmetic still runs): the DEU's cost
    depends on which subspaces its neurons are in.
    """
    calibrate_batch_norm(model, inputs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        nnf.cross_entropy(model(inputs), labels).backward()
        optimizer.step()

    def inference_step():
        model.eval()
        with torch.inference_mode():
            return model(inputs)

    return Workload(group, group, path, train_step, inference_step)


def training_workloads(settings: Settings) -> Iterator[Workload]:
    generator = torch.Generator().manual_seed(1)
    device = settings.device
    widths = "-".join(map(str, settings.mlp_widths))
    size = settings.image_size
    networks = (
        (
            f"MLP {widths}, batch {settings.mlp_batch}",
            lambda activation: mlp(settings.mlp_widths, activation),
            (settings.mlp_batch, settings.mlp_widths[0]),
        ),
        (
            f"stunted ResNet-18 {size}x{size}, batch {settings.conv_batch}",
            lambda activation: stunted_resnet(settings.conv_widths, activation),
            (settings.conv_batch, 3, size, size),
        ),
    )
    for group, build, input_shape in networks:
        inputs = torch.randn(input_shape, generator=generator).to(device)
        labels = torch.randint(0, 10, (input_shape[0],), generator=generator).to(device)
        for path, activation in ACTIVATIONS.items():
            torch.manual_seed(0)  # the same weights for every activation
            model = build(activation).to(device)
            yield training_workload(group, path, model, inputs, labels)


# --------------------------------------------------------------------------
# GPU cases (issue 12): run when a CUDA (or ROCm) device is present
# --------------------------------------------------------------------------

# The GPU shape: (rows, neurons), float32, the mixed population.
GPU_SHAPE = (8192, 4096)
TRITON_PATH = "DEU Triton (backend='triton')"
IN_OPERATOR_PATH = "DEU generated PyTorch, compiled inside the operator"
COPY_PATH = "device-to-device copy (dst.copy_(src))"


@dataclass(frozen=True)
class GpuSettings:
    """What the GPU section runs: one shape, on one device."""

    shape: tuple[int, int]
    repeats: int
    warmup: int
    warmup_s: float
    budget_s: float
    compile_backend: str  # of the in-operator compiled generated kernels
    device: torch.device


def gpu_settings(device: torch.device, quick: bool = False) -> GpuSettings:
    if quick:
        # 64 neurons: every subspace of the mixed population has at least one.
        return GpuSettings((8, 64), 1, 1, 0.0, 0.1, "eager", device)
    return GpuSettings(GPU_SHAPE, 25, 3, 0.5, 2.0, "inductor", device)


def gpu_unavailable_reason() -> str | None:
    """Why the GPU cases cannot run here, or None where they can."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"this torch ({torch.__version__}) is built without CUDA or ROCm support"
    return "torch.cuda.is_available() is False: no CUDA or ROCm device is visible"


def in_operator_compiled(
    coeffs: torch.Tensor, *, dim: int = 1, compile_backend: str | None = "inductor"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The generated PyTorch kernels as the operator runs them with its defaults,
    written as plain PyTorch code that ``torch.compile`` can see into.

    ``torch.compile(deu.functional.deu)`` cannot fuse anything inside the custom
    operator; this is the comparison of issue 12 instead: the same work as
    ``backend="torch"`` (classification, each subspace group's neuron
    quantities, ``value`` for the forward and ``derivatives`` with the clamp
    mask and the per-neuron reductions for the backward; the derived
    gravitation; the output clamp), with the forward and the backward each
    compiled by ``compile_backend`` (None: eager) as one graph.  The subspace
    groups are read from ``coeffs`` once, here (a host synchronisation the
    operator pays on every call): the returned function is for these
    coefficients only.  Its gradient in the coefficients is the operator's
    (straight through the classification).
    """
    settings = _OperatorSettings(
        dim=dim,
        epsilon=DEFAULTS["epsilon"],
        steepness=DEFAULTS["steepness"],
        max_exponent=DEFAULTS["max_exponent"],
        max_value=DEFAULTS["max_value"],
        gravitation=functional.gravitation_rule(DEFAULTS["gravitation"]),
        critical=DEFAULTS["critical"],
    )
    _, index = classify(coeffs.detach(), settings.epsilon, settings.critical)
    groups = _groups(index, lambda bad: unclassified_error(coeffs, bad))

    def forward(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        effective, _ = classify(c, settings.epsilon, settings.critical)
        shape = _neuron_shape(x, dim)
        parts = []
        for s, idx in groups:
            subspace = SUBSPACES[s]
            k = _neuron_quantities(subspace, _take(effective, 0, idx), shape, settings)
            parts.append((idx, subspace.value(_take(x, dim, idx), k)))
        return _assemble(parts, dim).clamp(-settings.max_value, settings.max_value)

    def backward(x: torch.Tensor, c: torch.Tensor, g: torch.Tensor):
        effective, _ = classify(c, settings.epsilon, settings.critical)
        shape = _neuron_shape(x, dim)
        input_parts, coeff_parts = [], []
        for s, idx in groups:
            subspace = SUBSPACES[s]
            group_coeffs = _take(effective, 0, idx)
            k = _neuron_quantities(subspace, group_coeffs, shape, settings)
            outputs = subspace.derivatives(_take(x, dim, idx), k)
            gs = _take(g, dim, idx) * (outputs[0].abs() <= settings.max_value).to(g.dtype)
            input_parts.append((idx, gs * outputs[1]))
            columns = [
                (
                    _reduce(gs * d, dim)
                    if d is not None and use
                    else torch.zeros_like(group_coeffs[:, 0])
                )
                for d, use in zip(
                    (outputs[o] for o in _OUTPUT_OF_COEFF),
                    summed_outputs(subspace, settings),
                    strict=True,
                )
            ]
            coeff_parts.append((idx, torch.stack(columns, dim=1)))
        return _assemble(input_parts, dim), _assemble(coeff_parts, 0)

    if compile_backend is not None:
        forward = torch.compile(forward, backend=compile_backend, fullgraph=True)
        backward = torch.compile(backward, backend=compile_backend, fullgraph=True)

    class Generated(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, c):
            ctx.save_for_backward(x, c)
            return forward(x, c)

        @staticmethod
        def backward(ctx, g):
            x, c = ctx.saved_tensors
            return backward(x, c, g.contiguous())

    def apply(x: torch.Tensor) -> torch.Tensor:
        return Generated.apply(x, coeffs)

    return apply


def copy_bandwidth_gbps(nbytes: int, ms: float) -> float:
    """GB/s (1e9 bytes/s) of a copy of ``nbytes`` bytes taking ``ms``: it reads
    and writes ``nbytes`` each."""
    return 2 * nbytes / (ms * 1e-3) / 1e9


def forward_traffic_bytes(shape: Sequence[int], element_size: int) -> int:
    """The least memory traffic of an activation's forward on an (N, C) input:
    the input read and the output written once, plus (C, 5) coefficients read."""
    return (2 * math.prod(shape) + 5 * shape[1]) * element_size


def bandwidth_fraction(traffic_bytes: int, ms: float, copy_gbps: float) -> float:
    """The achieved bandwidth (traffic / time) as a fraction of the copy's."""
    return traffic_bytes / (ms * 1e-3) / 1e9 / copy_gbps


def gpu_workloads(settings: GpuSettings) -> Iterator[Workload]:
    """The GPU cases: ReLU, PReLU and torch.exp; a device-to-device copy of the
    input (inference only); the DEU with the Triton kernels, the generated
    PyTorch kernels eager, and the same kernels compiled inside the operator
    (:func:`in_operator_compiled`); all on the mixed population, float32."""
    generator = torch.Generator().manual_seed(12)
    device, shape = settings.device, settings.shape
    group = f"{_shape_name(shape)} ({device.type})"
    x = torch.randn(shape, generator=generator).to(device)
    yield from reference_workloads(x, group)
    destination = torch.empty_like(x)

    def copy_step():
        return destination.copy_(x)

    yield Workload(group, group, COPY_PATH, None, copy_step)
    coeffs = mixed_population(shape[1], generator).to(device, torch.float32)
    c = coeffs.clone().requires_grad_()
    case = f"{group} mixed"
    yield activation_workload(
        group, case, TRITON_PATH, lambda t: functional.deu(t, c, backend="triton"), x, [c],
        optional=True,
    )  # fmt: skip
    yield activation_workload(
        group, case, TORCH_PATH, lambda t: functional.deu(t, c, backend="torch"), x, [c]
    )
    label = f"{IN_OPERATOR_PATH} ({settings.compile_backend})"
    try:
        compiled = in_operator_compiled(c, compile_backend=settings.compile_backend)
    except Exception as error:  # e.g. no compiler for inductor here: reported as skipped
        compiled = _raises(error)
    yield activation_workload(group, case, label, compiled, x, [c], optional=True)


def _raises(error: BaseException) -> Callable[[torch.Tensor], torch.Tensor]:
    def fail(_: torch.Tensor) -> torch.Tensor:
        raise error

    return fail


@dataclass
class GpuReport:
    rows: list[Row]
    notes: list[str]
    copy_gbps: float | None
    traffic_bytes: int


def run_gpu(
    settings: GpuSettings, progress: Callable[[GpuReport], object] | None = None
) -> GpuReport:
    """Measure the GPU cases; ``progress`` gets the report so far after each row."""
    torch.manual_seed(0)
    timing = Settings(
        activation_shapes=(settings.shape,),
        loop_neurons=0,
        mlp_widths=(),
        mlp_batch=0,
        conv_widths=(0, 0),
        conv_batch=0,
        image_size=0,
        repeats=settings.repeats,
        warmup=settings.warmup,
        warmup_s=settings.warmup_s,
        budget_s=settings.budget_s,
        compile_backend=settings.compile_backend,
        device=settings.device,
    )
    traffic = forward_traffic_bytes(settings.shape, torch.float32.itemsize)
    report = GpuReport([], [], None, traffic)
    for workload in gpu_workloads(settings):
        print(f"measuring {workload.case} / {workload.path}", file=sys.stderr, flush=True)
        row, note = _measure_or_note(workload, timing)
        report.rows.append(row)
        report.notes.extend(note)
        if workload.path == COPY_PATH and row.inference_ms is not None:
            nbytes = math.prod(settings.shape) * torch.float32.itemsize
            report.copy_gbps = copy_bandwidth_gbps(nbytes, row.inference_ms)
        if progress is not None:
            progress(report)
    return report


def _measure_or_note(workload: Workload, settings: Settings) -> tuple[Row, list[str]]:
    try:
        return measure(workload, settings), []
    except Exception as error:
        if not workload.optional:
            raise
        reason = next(iter(str(error).strip().splitlines()), "")
        note = f"{workload.path} on {workload.case} skipped: {type(error).__name__}: {reason}"
        return Row(workload.group, workload.case, workload.path, None, None, None), [note]


def render_gpu(report: GpuReport, settings: GpuSettings) -> str:
    """The GPU section: the table (columns as the main table's) and each row's
    forward against the measured copy bandwidth."""
    references = {(row.group, row.path): row for row in report.rows}
    lines = [
        f"### GPU cases: {_shape_name(settings.shape)} float32, mixed population, "
        f"on {settings.device}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(COLUMNS) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(table_cells(row, references)) + " |" for row in report.rows]
    lines += [""]
    if report.copy_gbps is None:
        lines.append("Copy bandwidth: not measured.")
    else:
        lines += [
            f"Copy bandwidth: {_number(report.copy_gbps)} GB/s (the input copied into a "
            f"preallocated tensor: {math.prod(settings.shape) * 4 / 2**20:g} MiB read and as "
            "much written, over the copy's median time).",
            "",
            "| path | inference ms | GB/s (read + written) | fraction of the copy's |",
            "|---|---:|---:|---:|",
        ]
        for row in report.rows:
            if row.inference_ms is None or row.path == COPY_PATH:
                continue
            gbps = report.traffic_bytes / (row.inference_ms * 1e-3) / 1e9
            fraction = bandwidth_fraction(report.traffic_bytes, row.inference_ms, report.copy_gbps)
            lines.append(
                f"| {row.path} | {_number(row.inference_ms)} | {_number(gbps)} | "
                f"{_number(fraction)} |"
            )
        lines += [
            "",
            f"Traffic per forward: {report.traffic_bytes} bytes (input read and output "
            "written once, float32, plus the (C, 5) coefficients); the least any "
            "activation's forward can move.",
        ]
    lines += [""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------


def git_commit() -> str:
    """The short commit hash of the checkout this module is in, or "unknown"."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description(device: torch.device) -> str:
    text = (
        f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def load_average() -> float | None:
    """The 1-minute load average, None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def describe_load(before: float | None, after: float | None) -> str:
    """The load around the run, with a warning when the machine was busy before it.

    Other processes' threads preempt this run's; with every core in use, a
    parallel op waits for its descheduled threads, and times jump by whole
    scheduler time slices (several ms).
    """
    if before is None or after is None:
        return "unknown"
    text = (
        f"{before:.2f} before the run, {after:.2f} after it "
        f"(this run adds about its {torch.get_num_threads()} threads)"
    )
    if before > 0.5 * (os.cpu_count() or 1):
        text += "; **the machine was busy: these timings are unreliable**"
    return text


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


def render(
    rows: Sequence[Row], settings: Settings, notes: Sequence[str], command: str, load: str
) -> str:
    references = {(row.group, row.path): row for row in rows}
    header = header_lines(settings.device, command, load)
    table = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(COLUMNS) - 2)) + "|",
    ]
    table += ["| " + " | ".join(table_cells(row, references)) + " |" for row in rows]
    return "\n".join(header + table + [""] + caption(settings, notes)) + "\n"


def run(settings: Settings) -> tuple[list[Row], list[str]]:
    """Measure every workload; returns the rows and the notes on skipped ones."""
    torch.manual_seed(0)  # the output gradients and the networks' weights
    rows, notes = [], []
    # One workload alive at a time: each holds its own inputs and gradients.
    for workload in itertools.chain(activation_workloads(settings), training_workloads(settings)):
        print(f"measuring {workload.case} / {workload.path}", file=sys.stderr, flush=True)
        try:
            rows.append(measure(workload, settings))
        except Exception as error:
            if not workload.optional:
                raise
            reason = next(iter(str(error).strip().splitlines()), "")
            notes.append(
                f"{workload.path} on {workload.case} skipped: {type(error).__name__}: {reason}"
            )
            rows.append(Row(workload.group, workload.case, workload.path, None, None, None))
    return rows, notes


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deu.benchmark", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a few seconds")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (at most)")
    parser.add_argument("--markdown", type=Path, help="also write the output to this file")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="the main table's device (default cpu); with --gpu, the GPU cases' (default cuda)",
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="only the GPU cases (with --device cpu: their code path on CPU tensors, "
        "the Triton row under TRITON_INTERPRET=1)",
    )
    arguments = parser.parse_args(argv)
    if arguments.gpu and arguments.device is None:
        arguments.device = "cuda"
    arguments.device = arguments.device or "cpu"
    if arguments.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: {gpu_unavailable_reason()}")
    if arguments.repeats is not None and arguments.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {arguments.repeats}")
    return arguments


def header_lines(device: torch.device, command: str, load: str) -> list[str]:
    return [
        "## DEU benchmark",
        "",
        f"- Commit: `{git_commit()}`",
        f"- Machine: {machine_description(device)}",
        f"- Device: {device}",
        f"- Load average (1 min): {load}",
        f"- Command: `{command}`",
        "",
    ]


def gpu_section(
    device: torch.device,
    quick: bool,
    repeats: int | None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """The GPU cases measured on ``device`` and rendered; ``progress`` gets the
    section so far after each row."""
    settings = gpu_settings(device, quick)
    if repeats is not None:
        settings = replace(settings, repeats=repeats)

    def partial(report: GpuReport) -> None:
        if progress is not None:
            progress(render_gpu(report, settings))

    return render_gpu(run_gpu(settings, partial), settings)


def not_run_line(reason: str) -> str:
    return (
        f"### GPU cases\n\nThe GPU cases ({_shape_name(GPU_SHAPE)} float32 on a CUDA or "
        f"ROCm device) were not run: {reason}.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    device = torch.device(arguments.device)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m deu.benchmark", *map(str, given)])

    def write(text: str) -> None:
        if arguments.markdown is not None:
            arguments.markdown.write_text(text)

    load_before = load_average()
    if arguments.gpu:
        # Rewritten after every row: a run cut short leaves what it measured.
        head = header_lines(device, command, describe_load(load_before, None))
        section = gpu_section(
            device, arguments.quick, arguments.repeats, lambda s: write("\n".join(head) + "\n" + s)
        )
        load = describe_load(load_before, load_average())
        text = "\n".join(header_lines(device, command, load)) + "\n" + section
    else:
        settings = (quick_settings if arguments.quick else full_settings)(device)
        if arguments.repeats is not None:
            settings = replace(settings, repeats=arguments.repeats)
        rows, notes = run(settings)
        reason = gpu_unavailable_reason()
        gpu = (
            not_run_line(reason)
            if reason is not None
            else gpu_section(torch.device("cuda"), arguments.quick, arguments.repeats)
        )
        load = describe_load(load_before, load_average())
        text = render(rows, settings, notes, command, load) + "\n" + gpu
    print(text, end="")
    write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
