"""The report and the command line (``python -m deu.benchmark``)."""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from deu.benchmark.cases import (
    _shape_name,
    activation_workloads,
    layer_workloads,
    training_workloads,
)
from deu.benchmark.gpu import (
    GPU_SHAPE,
    GpuReport,
    gpu_settings,
    gpu_unavailable_reason,
    render_gpu,
    run_gpu,
)
from deu.benchmark.measurement import Row, Settings, full_settings, measure, quick_settings
from deu.benchmark.table import COLUMNS, caption, table_cells


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
    for workload in itertools.chain(
        activation_workloads(settings), layer_workloads(settings), training_workloads(settings)
    ):
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
