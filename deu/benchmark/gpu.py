"""GPU cases (issue 12): run when a CUDA (or ROCm) device is present."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from deu import functional
from deu._plan import Settings as _OperatorSettings
from deu._plan import _groups
from deu._subspaces import classify, unclassified_error
from deu._values import torch_backward, torch_forward
from deu.benchmark.baselines import DEFAULTS
from deu.benchmark.cases import TORCH_PATH, _shape_name, activation_workload, reference_workloads
from deu.benchmark.measurement import Row, Settings, Workload, measure
from deu.benchmark.populations import mixed_population
from deu.benchmark.table import COLUMNS, _number, table_cells

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
    as plain PyTorch code that ``torch.compile`` can see into: the operator's own
    PyTorch path (``deu._values.torch_forward`` and ``torch_backward``), not a copy.

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

    # The PyTorch path itself (deu._values), with the groups read above.
    def forward(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch_forward(x, c, settings, groups)

    def backward(x: torch.Tensor, c: torch.Tensor, g: torch.Tensor):
        return torch_backward(x, c, g, settings, True, True, groups)

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
        layer_shapes=(),
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
