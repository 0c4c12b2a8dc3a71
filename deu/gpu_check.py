"""The one-shot GPU check of issue 12: ``python -m deu.gpu_check`` (``make gpu-check``).

For a session that is lent a GPU for a few minutes: one command, nothing to
build by hand, a few minutes on an H100/H200 (the Triton kernels' first
compilation is most of it).  In order:

1. **Numerics.**  On the device, float32: the Triton backend against the
   generated PyTorch path (``backend="torch"``) in every subspace, on ``(N, C)``
   and ``(N, C, H, W)`` inputs, with the derived gravitation, the neighbour rule
   and none: values, input gradients and coefficient gradients, element by
   element against each element's own size with a floor,
   ``|triton - torch| <= 1e-5 * |torch| + 1e-5`` (the criterion of
   ``tests/test_triton.py`` in float32).  For scale, the same measure of the
   PyTorch path's own float32 error against its float64 result.  Reruns of the
   Triton backward must agree bit for bit.
2. **The GPU bench cases** of ``python -m deu.benchmark --gpu``.
3. **A Markdown block** for BENCHMARKS.md, printed, and with ``--markdown PATH``
   also written there, rewritten after each step (a run cut short by a timeout
   leaves what it measured).

The exit status is 0 when the numerics passed, 1 when they did not.
``--device cpu --quick`` runs the same code at tiny sizes on CPU tensors (the
Triton backend needs ``TRITON_INTERPRET=1`` there): that is how the tests
exercise it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from deu import benchmark
from deu import functional as F
from deu._subspaces import SUBSPACE_NAMES, classify

# The criterion (relative, and the same number as the floor) of tests/test_triton.py
# in float32; the interpreter's worst there was 1.6e-6.
TOLERANCE = 1e-5
GRAVITATION = {"derived": "derived", "neighbour": "neighbour", "off": False}


@dataclass
class Worst:
    """The worst |f - r| / (|r| + 1) seen, and where (that measure is at most
    TOLERANCE exactly where |f - r| <= TOLERANCE * |r| + TOLERANCE)."""

    value: float = 0.0
    where: str = ""

    def update(self, f: torch.Tensor, r: torch.Tensor, where: str) -> None:
        if f.numel() == 0:
            return
        ratio = float(((f.double() - r.double()).abs() / (r.double().abs() + 1)).max())
        if not ratio <= self.value:  # NaN counts as worst
            self.value, self.where = ratio, where


def _population(per_subspace: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(12)
    parts = [benchmark.subspace_population(n, per_subspace, generator) for n in SUBSPACE_NAMES]
    coeffs = torch.cat(parts)
    return coeffs[torch.randperm(len(coeffs), generator=generator)]


def _run(x: torch.Tensor, coeffs: torch.Tensor, backend: str, gravitation, g: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    c = coeffs.detach().clone().requires_grad_()
    y = F.deu(x, c, backend=backend, gravitation=gravitation)
    y.backward(g)
    return y.detach(), x.grad, c.grad


def check_numerics(device: torch.device, quick: bool = False) -> tuple[list[str], bool]:
    """(Markdown lines, passed) of the Triton backend against the PyTorch path."""
    per_subspace = 1 if quick else 12
    coeffs64 = _population(per_subspace).to(device)
    _, index = classify(coeffs64.float(), 0.01)
    neurons = len(index)
    # Each subspace's neurons (the population is shuffled).
    picks = {n: (index == i).nonzero().flatten() for i, n in enumerate(SUBSPACE_NAMES)}
    shapes = {"(N, C)": (9, neurons), "(N, C, H, W)": (2, neurons, 3, 5)}
    if not quick:
        shapes = {"(N, C)": (1000, neurons), "(N, C, H, W)": (4, neurons, 16, 16)}
    quantities = ("value", "input grad", "coeff grad")
    triton = {(s, q): Worst() for s in SUBSPACE_NAMES for q in quantities}
    own = {(s, q): Worst() for s in SUBSPACE_NAMES for q in quantities}
    reproducible = True
    generator = torch.Generator().manual_seed(0)
    for layout, shape in shapes.items():
        x64 = (1.5 * torch.randn(shape, generator=generator, dtype=torch.float64)).to(device)
        g64 = torch.randn(shape, generator=generator, dtype=torch.float64).to(device)
        x, g, coeffs = x64.float(), g64.float(), coeffs64.float()
        for rule, gravitation in GRAVITATION.items():
            where = f"{layout}, gravitation {rule}"
            result = _run(x, coeffs, "triton", gravitation, g)
            again = _run(x, coeffs, "triton", gravitation, g)
            reproducible &= all(torch.equal(a, b) for a, b in zip(result, again, strict=True))
            reference = _run(x, coeffs, "torch", gravitation, g)
            exact = _run(x64, coeffs64, "torch", gravitation, g64)
            for name, pick in picks.items():
                for q, f, r, e in zip(quantities, result, reference, exact, strict=True):
                    axis = 0 if q == "coeff grad" else 1
                    f, r, e = (t.index_select(axis, pick) for t in (f, r, e))
                    triton[(name, q)].update(f, r, where)
                    own[(name, q)].update(r, e, where)
    from deu import _triton

    failed = _triton._state.get("failed")
    lines = [
        f"Numerics on {device} (float32, Triton against backend='torch'; per element "
        f"|triton - torch| / (|torch| + 1), passing at <= {TOLERANCE:g}; in brackets the "
        "PyTorch path's own float32 error against its float64 result, same measure; "
        f"{per_subspace} neurons per subspace, (N, C) {shapes['(N, C)']} and (N, C, H, W) "
        f"{shapes['(N, C, H, W)']}, gravitation derived, neighbour and off):",
        "",
        "| subspace | value | input grad | coeff grad | worst at |",
        "|---|---:|---:|---:|---|",
    ]
    passed = failed is None and reproducible
    for name in SUBSPACE_NAMES:
        cells = []
        for q in quantities:
            w, o = triton[(name, q)], own[(name, q)]
            passed &= w.value <= TOLERANCE
            cells.append(f"{w.value:.2g} ({o.value:.2g})")
        worst = max((triton[(name, q)] for q in quantities), key=lambda w: w.value)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {worst.where} |")
    lines += [
        "",
        f"Reruns of the Triton backward bit for bit equal: {'yes' if reproducible else 'NO'}.",
    ]
    if failed is not None:
        lines.append(
            f"**A Triton kernel failed and the PyTorch path ran instead:** "
            f"{type(failed).__name__}: {str(failed)[:500]}"
        )
    lines.append(f"Numerics: **{'passed' if passed else 'FAILED'}**.")
    return lines, passed


def _targets(report: benchmark.GpuReport) -> list[str]:
    """The issue's GPU targets, from the measured rows."""
    rows = {row.path: row for row in report.rows}
    triton, prelu = rows.get(benchmark.TRITON_PATH), rows.get("PReLU")
    compiled = next((r for p, r in rows.items() if p.startswith(benchmark.IN_OPERATOR_PATH)), None)

    def ratio(a, b) -> str:
        return "—" if a is None or b is None else f"{a / b:.3g}"

    lines = ["| target | measured |", "|---|---:|"]
    if triton is None or prelu is None:
        return lines + ["| (the Triton row was not measured) | — |"]
    lines.append(f"| fwd+bwd within 1.3x PReLU | {ratio(triton.train_ms, prelu.train_ms)}x |")
    fraction = "—"
    if report.copy_gbps is not None and triton.inference_ms is not None:
        value = benchmark.bandwidth_fraction(
            report.traffic_bytes, triton.inference_ms, report.copy_gbps
        )
        fraction = f"{value:.2f}"
    lines.append(f"| forward at 0.6 or more of the copy bandwidth | {fraction} |")
    if compiled is not None:
        lines.append(
            "| faster than the inductor-compiled generated kernels (Triton / compiled; "
            f"fwd+bwd, inference) | {ratio(triton.train_ms, compiled.train_ms)}, "
            f"{ratio(triton.inference_ms, compiled.inference_ms)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deu.gpu_check", description=__doc__)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the tests)")
    parser.add_argument("--markdown", type=Path, help="also write the block to this file")
    parser.add_argument("--no-bench", action="store_true", help="the numerics only")
    arguments = parser.parse_args(argv)
    device = torch.device(arguments.device)
    if device.type == "cuda" and (reason := benchmark.gpu_unavailable_reason()) is not None:
        print(f"deu.gpu_check: not run: {reason}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    command = " ".join(["python -m deu.gpu_check", *(sys.argv[1:] if argv is None else argv)])
    head = benchmark.header_lines(device, command, "not recorded")
    head[0] = "## DEU on the GPU (deu.gpu_check)"
    triton_version = "not importable"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        pass
    head.insert(-1, f"- Triton: {triton_version}")
    sections: list[str] = []

    def show(extra: str = "") -> str:
        elapsed = f"\n_{time.perf_counter() - start:.0f} s so far._\n"
        text = "\n".join(head) + "\n" + "\n\n".join([*sections, extra]).rstrip() + "\n" + elapsed
        if arguments.markdown is not None:
            arguments.markdown.write_text(text)
        return text

    print("checking the numerics", file=sys.stderr, flush=True)
    lines, passed = check_numerics(device, arguments.quick)
    sections.append("\n".join(lines))
    show()
    if not arguments.no_bench:
        settings = benchmark.gpu_settings(device, arguments.quick)
        report = benchmark.run_gpu(settings, lambda r: show(benchmark.render_gpu(r, settings)))
        sections.append(benchmark.render_gpu(report, settings))
        sections.append("\n".join(_targets(report)))
    print(show(), end="")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
