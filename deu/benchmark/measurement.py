"""Measuring: timing, peak memory, and the workloads and rows they fill."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch


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
    layer_shapes: tuple[tuple[int, ...], ...]  # small: the per-call cost
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
        # Issue 18's (32, 64) batch of a 64-wide layer, and a wider one.
        layer_shapes=((32, 64), (128, 256)),
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
        layer_shapes=((4, 8),),
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
