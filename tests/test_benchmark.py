"""The benchmark (``deu.benchmark``): its table is complete, its populations
are the stated ones, and its two baselines compute what the runtime computes.

No timing is asserted: the benchmark measures and reports.  The baselines are
checked because a comparison with a wrong baseline would be meaningless.
"""

from __future__ import annotations

import contextlib
import io
import math

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
    """The header and the rows keyed by (case, path), each a {column: cell} dict."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, body = split[0], split[1:]
    rows = {(cells[0], cells[1]): dict(zip(header, cells, strict=True)) for cells in body}
    assert len(rows) == len(body), "a (case, path) pair appears twice"
    return header, rows


def _expected_rows() -> set[tuple[str, str]]:
    """Every (case, path) of the quick run, written out independently."""
    activation_rows = {
        "8x16": "per-neuron loop (baseline; 4 of 16 neurons, x4)",
        "2x8x4x4": "per-neuron loop (baseline; 4 of 8 neurons, x2)",
    }
    deu_paths = (
        "DEU default (fused CPU kernel)",
        "DEU generated PyTorch, eager",
        "DEU generated PyTorch, compiled (eager)",
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
