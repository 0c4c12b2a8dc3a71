"""The benchmark (``deu.benchmark``): its table is complete, its populations
are the stated ones, and its two baselines compute what the runtime computes.

No timing is asserted: the benchmark measures and reports.  The baselines are
checked because a comparison with a wrong baseline would be meaningless.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import deu
from deu import benchmark
from deu import functional as F

NAMES = list(deu.SUBSPACE_NAMES)
MISSING = "—"


# --------------------------------------------------------------------------
# The --quick run
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[str, str]:
    """(printed text, text written to --markdown) of one in-process quick run."""
    written = tmp_path_factory.mktemp("bench") / "bench.md"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        status = benchmark.main(["--quick", "--markdown", str(written)])
    assert status == 0
    return printed.getvalue(), written.read_text()


def _table(text: str) -> tuple[list[str], dict[tuple[str, str], dict[str, str]]]:
    """The header and the rows keyed by (case, path), each a {column: cell} dict,
    of the first table in ``text``."""
    lines = list(itertools.takewhile(lambda line: line.startswith("|"), _from_first_table(text)))
    lines = [line for line in lines if line.startswith("| ")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, body = split[0], split[1:]
    rows = {(cells[0], cells[1]): dict(zip(header, cells, strict=True)) for cells in body}
    assert len(rows) == len(body), "a (case, path) pair appears twice"
    return header, rows


def _from_first_table(text: str) -> list[str]:
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| "))
    return lines[first:]


def _expected_rows() -> set[tuple[str, str]]:
    """Every (case, path) of the quick run, written out independently."""
    activation_rows = {
        "8x16": "per-neuron loop (baseline; 4 of 16 neurons, x4)",
        "2x8x4x4": "per-neuron loop (baseline; 4 of 8 neurons, x2)",
    }
    deu_paths = (
        "DEU default (fused CPU kernel)",
        "DEU generated PyTorch, eager",
        "DEU operator under torch.compile (eager)",
    )
    expected = set()
    for group, loop in activation_rows.items():
        expected |= {(group, path) for path in ("ReLU", "PReLU", "torch.exp")}
        mixed = f"{group} mixed"
        baselines = (
            "DEU default (fused CPU kernel), no gravitation",
            "DEU generated PyTorch, eager, no gravitation",
            "masked Algorithm 1 (baseline)",
            loop,
        )
        expected |= {(mixed, path) for path in deu_paths + baselines}
        expected |= {(f"{group} {name}", path) for name in NAMES for path in deu_paths}
    layer = "layer 4x8"
    expected |= {(layer, path) for path in ("ReLU", "PReLU", "torch.exp")}
    expected.add((layer, "DEU layer, ReLU start (default)"))
    expected |= {
        (f"{layer} mixed", path)
        for path in ("DEU layer", "DEU layer through the operator (no eager path)")
    }
    for network in ("MLP 784-32-16-10, batch 8", "stunted ResNet-18 8x8, batch 2"):
        paths = ("ReLU", "PReLU", "DEU", "DEU (generated PyTorch kernels)")
        expected |= {(network, path) for path in paths}
    return expected


def test_quick_run_prints_one_table_with_every_row_and_writes_it(quick_run):
    printed, written = quick_run
    assert printed == written
    header, rows = _table(printed)
    assert header == list(benchmark.COLUMNS)
    assert set(rows) == _expected_rows()
    assert "Commit: `" in printed and "Machine: " in printed


def _allowed_missing(case: str, path: str, skipped: bool) -> set[str]:
    """Columns that have no number by construction."""
    if skipped:
        return set(benchmark.COLUMNS[2:])
    if path == "torch.exp":  # inference only
        return {"fwd+bwd ms", "fwd+bwd / ReLU", "fwd+bwd / PReLU", "fwd+bwd peak MiB"}
    if case.startswith(("MLP", "stunted ResNet")):  # no torch.exp reference for networks
        return {"inference / exp"}
    return set()


def test_every_reported_number_is_finite_and_positive(quick_run):
    printed, _ = quick_run
    _, rows = _table(printed)
    for (case, path), row in rows.items():
        skipped = f"{path} on {case} skipped" in printed
        assert not skipped or "compiled" in path, f"only the compiled path may be skipped: {path}"
        missing = _allowed_missing(case, path, skipped)
        for column in benchmark.COLUMNS[2:]:
            cell = row[column]
            if column in missing:
                assert cell == MISSING, (case, path, column, cell)
            else:
                value = float(cell)
                assert math.isfinite(value) and value > 0, (case, path, column, cell)


def test_reference_rows_have_ratio_one(quick_run):
    _, rows = _table(quick_run[0])
    for group in ("8x16", "2x8x4x4"):
        assert float(rows[(group, "PReLU")]["fwd+bwd / PReLU"]) == 1
        assert float(rows[(group, "ReLU")]["fwd+bwd / ReLU"]) == 1
        assert float(rows[(group, "torch.exp")]["inference / exp"]) == 1


# --------------------------------------------------------------------------
# Populations
# --------------------------------------------------------------------------

# The mixed population, written out independently of the benchmark.
STATED_SHARES = {
    "a_b_c_disc_neg": 0.4,  # damped oscillation
    "a_b_c_disc_pos": 0.2,  # overdamped
    "a0_b_c0": 0.1,  # ReLU-like, a = c = 0
    "a_b0_c_pos": 0.1,  # undamped oscillation, b = 0
    "a0_b_c": 0.1,  # first order, a = 0
    # the remaining 10%, shared by the other five subspaces
    "a0_b0_c": 0.02,
    "a_b0_c0": 0.02,
    "a_b0_c_neg": 0.02,
    "a_b_c0": 0.02,
    "a_b_c_disc_zero": 0.02,
}


@pytest.mark.parametrize("n", [64, 100, 1000, 1024])
def test_mixed_population_has_the_stated_proportions(n):
    coeffs = benchmark.mixed_population(n, torch.Generator().manual_seed(n))
    assert coeffs.shape == (n, 5)
    found = deu.subspaces(coeffs)
    for name, share in STATED_SHARES.items():
        # Whole neurons: each count is within one neuron of its exact share.
        assert abs(found.count(name) - share * n) < 1, (name, found.count(name), share * n)


def test_mixed_population_interleaves_subspaces():
    # Neurons of one subspace are not contiguous, so the grouped runtime has to gather.
    found = deu.subspaces(benchmark.mixed_population(1024, torch.Generator().manual_seed(0)))
    assert found[:410] != ["a_b_c_disc_neg"] * 410


@pytest.mark.parametrize("name", NAMES)
def test_single_subspace_population_is_in_its_subspace(name):
    coeffs = benchmark.subspace_population(name, 200, torch.Generator().manual_seed(3))
    assert set(deu.subspaces(coeffs)) == {name}


# --------------------------------------------------------------------------
# The baselines compute the runtime's function and gradients
# --------------------------------------------------------------------------

BASELINES = [benchmark.masked_every_subspace, benchmark.per_neuron_loop]
# Float64 on both sides and the same closed forms: only the order of the
# additions differs (the coefficient gradients sum over up to 240 elements of
# size O(10)), so 1e-10 is far above rounding and far below any formula error.
TOLERANCE = dict(rtol=1e-10, atol=1e-10)


def _population(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    if name == "mixed":
        return benchmark.mixed_population(n, generator)
    return benchmark.subspace_population(name, n, generator)


@pytest.mark.parametrize("baseline", BASELINES, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "population, shape",
    [("mixed", (6, 100)), ("mixed", (2, 100, 3, 4))] + [(name, (5, 7, 3)) for name in NAMES],
)
def test_baseline_matches_the_runtime_in_values_and_gradients(baseline, population, shape):
    generator = torch.Generator().manual_seed(7)
    x = (2 * torch.randn(shape, generator=generator, dtype=torch.float64)).requires_grad_()
    coeffs = _population(population, shape[1], generator).requires_grad_()
    grad_output = torch.randn(shape, generator=generator, dtype=torch.float64)

    expected = F.deu(x, coeffs, gravitation=False)
    expected_dx, expected_dc = torch.autograd.grad(expected, (x, coeffs), grad_output)
    actual = baseline(x, coeffs)
    actual_dx, actual_dc = torch.autograd.grad(actual, (x, coeffs), grad_output)

    torch.testing.assert_close(actual, expected, **TOLERANCE)
    torch.testing.assert_close(actual_dx, expected_dx, **TOLERANCE)
    # Critically damped neurons: the runtime's a, b, c gradients are the partial
    # derivatives of the ODE's solution at b^2 = 4ac; autograd differentiates the
    # closed form with c = b^2/(4a) eliminated, a different (restricted)
    # derivative by design.  Their c1, c2 gradients must still agree.
    critical = torch.tensor([s == "a_b_c_disc_zero" for s in deu.subspaces(coeffs)])
    abc = torch.zeros(5, dtype=torch.bool)
    abc[:3] = True
    compared = ~(critical.unsqueeze(1) & abc)
    torch.testing.assert_close(actual_dc[compared], expected_dc[compared], **TOLERANCE)


def test_the_memory_measurement_drops_the_profilers_notices_and_keeps_other_output(capfd):
    """The profiler's C++ side writes "USDT: ... profiler_start/stop" to stderr
    (about 300 lines in a full run); anything else written meanwhile stays."""
    import sys

    def step():
        sys.stderr.write("a line of our own\n")
        return torch.ones(1000).sum()

    peak = benchmark.peak_memory_mb(step, torch.device("cpu"))
    err = capfd.readouterr().err
    assert "USDT" not in err
    assert err.count("a line of our own") == 2
    assert peak is None or peak >= 0


# --------------------------------------------------------------------------
# The GPU cases (issue 12), exercised on CPU tensors at tiny sizes
# --------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def test_without_cuda_the_run_says_the_gpu_cases_were_not_run_and_why(quick_run):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the GPU cases ran")
    printed, _ = quick_run
    assert "### GPU cases" in printed
    reason = benchmark.gpu_unavailable_reason()
    assert reason is not None
    assert f"(8192x4096 float32 on a CUDA or ROCm device) were not run: {reason}." in printed
    if torch.version.cuda is None and torch.version.hip is None:
        assert "built without CUDA or ROCm support" in reason


def test_gpu_only_on_a_machine_without_cuda_is_refused_with_the_reason(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit):
        benchmark.parse_arguments(["--gpu"])
    assert benchmark.gpu_unavailable_reason() in capsys.readouterr().err


def test_the_bandwidth_formulas_on_a_known_case():
    # A copy of 1e9 bytes in 2 ms reads and writes 1e9 bytes each: 1000 GB/s.
    assert benchmark.copy_bandwidth_gbps(10**9, 2.0) == pytest.approx(1000.0)
    # An (N, C) float32 forward reads x and writes y (4 bytes an element each)
    # and reads the (C, 5) coefficients.
    assert benchmark.forward_traffic_bytes((8192, 4096), 4) == 2 * 8192 * 4096 * 4 + 5 * 4096 * 4
    assert benchmark.forward_traffic_bytes((3, 2), 8) == (2 * 6 + 10) * 8
    # 5e8 bytes in 1 ms is 500 GB/s: half of a 1000 GB/s copy.
    assert benchmark.bandwidth_fraction(5 * 10**8, 1.0, 1000.0) == pytest.approx(0.5)
    # The copy itself, by the same formulas, is at fraction 1.
    nbytes = 7 * 10**6
    gbps = benchmark.copy_bandwidth_gbps(nbytes, 0.3)
    assert benchmark.bandwidth_fraction(2 * nbytes, 0.3, gbps) == pytest.approx(1.0)


@pytest.mark.parametrize("population", ["mixed", "a_b_c_disc_neg"])
@pytest.mark.parametrize("compile_backend", [None, "eager"])
def test_the_in_operator_kernels_compute_what_the_operator_computes(population, compile_backend):
    # The workload that torch.compile sees into must be the same work and the
    # same function as backend="torch" (derived gravitation, clamp, critical
    # rule); "eager" runs what Dynamo traced, which is what inductor compiles.
    generator = torch.Generator().manual_seed(5)
    coeffs = _population(population, 64, generator).requires_grad_()
    x = (3 * torch.randn(7, 64, generator=generator, dtype=torch.float64)).requires_grad_()
    g = torch.randn(7, 64, generator=generator, dtype=torch.float64)
    expected = F.deu(x, coeffs, backend="torch")
    expected_grads = torch.autograd.grad(expected, (x, coeffs), g)
    apply = benchmark.in_operator_compiled(coeffs, compile_backend=compile_backend)
    actual = apply(x)
    actual_grads = torch.autograd.grad(actual, (x, coeffs), g)
    exact = dict(rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(actual, expected, **exact)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e, **exact)
    # The gravitation terms are in it: singular neurons get gradients in a, b or c.
    if population == "mixed":
        singular = [name.startswith("a0") for name in deu.subspaces(coeffs)]
        assert actual_grads[1][torch.tensor(singular), 0].abs().sum() > 0


def _gpu_cases_on_cpu(tmp_path: Path, module: str, *arguments: str):
    """Run a GPU entry point at tiny sizes on CPU tensors, the Triton kernels
    under the interpreter, in a fresh process (TRITON_INTERPRET=1 must be set
    before triton is imported)."""
    written = tmp_path / "out.md"
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", module, "--device", "cpu", "--quick", "--markdown", str(written)]
        + list(arguments),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout == written.read_text()
    return result.stdout


GPU_PATHS = {
    "ReLU",
    "PReLU",
    "torch.exp",
    benchmark.COPY_PATH,
    benchmark.TRITON_PATH,
    "DEU generated PyTorch, eager",
    f"{benchmark.IN_OPERATOR_PATH} (eager)",
}


def _check_gpu_section(text: str) -> None:
    section = text[text.index("### GPU cases: 8x64 float32") :]
    header, rows = _table(section)
    assert header == list(benchmark.COLUMNS)
    assert {path for _, path in rows} == GPU_PATHS
    assert "skipped" not in section  # the Triton row ran (interpreted), and the compiled one
    for (_, path), row in rows.items():
        missing = set()
        if path in ("torch.exp", benchmark.COPY_PATH):  # inference only
            missing = {"fwd+bwd ms", "fwd+bwd / ReLU", "fwd+bwd / PReLU", "fwd+bwd peak MiB"}
        for column in benchmark.COLUMNS[2:]:
            if column in missing:
                assert row[column] == MISSING, (path, column)
            else:
                assert math.isfinite(float(row[column])) and float(row[column]) > 0, (path, column)
    # The bandwidth table: every row with an inference time but the copy, and
    # its fraction is its GB/s over the copy's, as printed (3 digits).
    copy_line = next(line for line in section.splitlines() if line.startswith("Copy bandwidth:"))
    copy_gbps = float(copy_line.split()[2])
    bandwidth = _from_first_table(section[section.index("| path | inference ms") :])
    bandwidth = list(itertools.takewhile(lambda line: line.startswith("|"), bandwidth))[2:]
    cells = {line.split("|")[1].strip(): line.split("|")[2:5] for line in bandwidth}
    assert set(cells) == GPU_PATHS - {benchmark.COPY_PATH}
    traffic = benchmark.forward_traffic_bytes((8, 64), 4)
    assert f"Traffic per forward: {traffic} bytes" in section
    for path, (ms, gbps, fraction) in cells.items():
        assert float(ms) == float(rows[(_case_of(rows, path), path)]["inference ms"])
        assert float(gbps) == pytest.approx(traffic / (float(ms) * 1e-3) / 1e9, rel=1e-2)
        assert float(fraction) == pytest.approx(float(gbps) / copy_gbps, rel=2e-2)


def _case_of(rows, path: str) -> str:
    return next(case for case, p in rows if p == path)


def test_the_gpu_cases_run_on_cpu_tensors_under_the_interpreter(tmp_path):
    pytest.importorskip("triton", reason="triton is not installed (it is in the dev extra)")
    printed = _gpu_cases_on_cpu(tmp_path, "deu.benchmark", "--gpu")
    assert "Device: cpu" in printed
    _check_gpu_section(printed)


def test_the_gpu_check_script_runs_on_cpu_tensors_under_the_interpreter(tmp_path):
    pytest.importorskip("triton", reason="triton is not installed (it is in the dev extra)")
    printed = _gpu_cases_on_cpu(tmp_path, "deu.gpu_check")
    # The numerics table: one row per subspace, every worst value a number,
    # and the verdict (the interpreter agrees with the PyTorch path).
    numerics = printed[printed.index("| subspace | value") :]
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), numerics.splitlines()))[2:]
    assert [row.split("|")[1].strip() for row in rows] == NAMES
    for row in rows:
        for cell in row.split("|")[2:5]:
            triton_worst = float(cell.split()[0])
            assert 0 <= triton_worst <= 1e-5, row
    assert "Reruns of the Triton backward bit for bit equal: yes." in printed
    assert "Numerics: **passed**." in printed
    _check_gpu_section(printed)
    assert "| fwd+bwd within 1.3x PReLU |" in printed
