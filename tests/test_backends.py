"""Every backend computes what the generated PyTorch path computes."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import deu._generated as generated
import pytest
import torch

import deu
from deu import _cpp
from deu import functional as F

GENERATED = Path(generated.__file__).parent

# One neuron well inside each subspace, plus singular neurons for gravitation.
NEURONS = {
    "a0_b0_c": (0.0, 0.0, 1.3, 0.0, 0.0),
    "a0_b_c0": (0.0, 0.8, 0.0, 0.2, 0.0),
    "a0_b_c": (0.0, -0.9, 0.6, 0.1, 0.0),
    "a_b0_c0": (0.7, 0.0, 0.0, 0.1, -0.3),
    "a_b0_c_pos": (-0.8, 0.0, -1.1, 0.3, 0.2),
    "a_b0_c_neg": (0.9, 0.0, -0.7, 0.1, 0.1),
    "a_b_c0": (-0.6, 0.9, 0.0, 0.2, 1.0),
    "a_b_c_disc_pos": (0.5, 1.7, 0.6, 0.1, 0.2),
    "a_b_c_disc_zero": (0.5, 1.2, 0.72, 0.1, 0.3),
    "a_b_c_disc_neg": (1.1, -0.4, 0.9, 0.3, 0.1),
}


def _run(x, coeffs, backend, gravitation=True):
    x = x.clone().requires_grad_()
    coeffs = coeffs.clone().requires_grad_()
    y = F.deu(x, coeffs, backend=backend, gravitation=gravitation, steepness=3.0)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    y.backward(g)
    return y.detach(), x.grad, coeffs.grad


@pytest.fixture(scope="module")
def cpu_kernel():
    if not _cpp.available():
        pytest.skip("the fused CPU kernel could not be built here (see the warning)")
    return _cpp.load()


def _skip_without_compiler_or_ninja():
    from torch.utils.cpp_extension import is_ninja_available

    compiler = shlex.split(os.environ.get("CXX", "c++"))[0]  # CXX may be "ccache g++"
    if shutil.which(compiler) is None or not is_ninja_available():
        pytest.skip("no C++ compiler or no ninja here: the generated PyTorch path runs")


def test_the_cpu_kernel_builds_wherever_there_is_a_compiler():
    # The tests below skip when the kernel cannot be built (the fallback is a
    # feature); where a compiler exists, a build failure is a bug, not a skip.
    _skip_without_compiler_or_ninja()
    assert _cpp.load() is not None, "the fused CPU kernel failed to build (see the warning)"


def test_auto_runs_the_fused_kernel_on_the_cpu_wherever_there_is_a_compiler(monkeypatch):
    # Otherwise every backend="auto" test would silently test the PyTorch path
    # a second time.
    _skip_without_compiler_or_ninja()
    assert F.resolve_backend("auto", torch.device("cpu")) == "cpp"
    calls = []
    real = _cpp.extension
    monkeypatch.setattr(_cpp, "extension", lambda: calls.append(1) or real())
    x = torch.randn(4, 2, requires_grad=True)
    coeffs = torch.tensor([NEURONS["a_b_c_disc_neg"], NEURONS["a0_b_c0"]], requires_grad=True)
    y = F.deu(x, coeffs, backend="auto", epsilon=0.01, critical="nearest", gravitation=True)
    y.sum().backward()
    assert len(calls) == 2, "backend='auto' did not run the fused kernel's forward and backward"


@pytest.mark.parametrize("name", list(NEURONS))
@pytest.mark.parametrize("shape", [(6, 1), (3, 1, 4, 2)])
def test_the_cpu_kernel_agrees_with_the_pytorch_path_in_every_subspace(cpu_kernel, name, shape):
    coeffs = torch.tensor([NEURONS[name]], dtype=torch.float64)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1.5
    for gravitation in (False, True):
        reference = _run(x, coeffs, "torch", gravitation)
        fused = _run(x, coeffs, "cpp", gravitation)
        for what, r, f in zip(("value", "input grad", "coeff grad"), reference, fused, strict=True):
            # Same formulas; the kernel's exp/sin/cos and its reduction order
            # differ from PyTorch's by an ulp here and there.
            rtol, atol = (1e-12, 1e-12)
            if gravitation and what == "coeff grad":
                rtol, atol = _GRAVITATION_TOL
            assert torch.allclose(f, r, rtol=rtol, atol=atol), (name, what, gravitation)


# Gravitation differentiates the neighbour at a coefficient of size epsilon,
# where its formulas cancel large terms (the ramp neighbour of a_b0_c0 at
# b = 0.01 has dy/db terms of size 2a/b^3 ~ 1.4e6) and the matched initial
# conditions come from a nearly singular 2x2 system: the backends' last-ulp
# differences in exp (the kernel's here, PyTorch's there) grow to ~1e-12 relative.
_GRAVITATION_TOL = (1e-10, 1e-12)


# Per-element tolerances: |fused - torch| <= rtol * |torch| + atol for each
# element (value, input gradient, coefficient gradient) on its own.
# float64: a few ulp of exp/sin/cos and another summation order, amplified by
# the formulas' subtractions: 1e-12 relative (measured: up to 7e-13).
# float32: the same, 2e-5 relative (measured: up to 7e-6); the floor 1e-5 is
# float32 rounding (1.2e-7) of terms up to ~100 that cancel where an element is
# near zero (zero crossings of oscillating and growing modes at |t| up to 8;
# measured: up to 1.9e-6 at a value of 5e-3).
_TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-5, 1e-5)}


def _assert_each_element_close(fused, reference, tol, what):
    rtol, atol = tol
    torch.testing.assert_close(fused, reference, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("gravitation", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_cpu_kernel_agrees_on_a_mixed_population_element_by_element(
    cpu_kernel, dtype, gravitation
):
    coeffs = torch.tensor(list(NEURONS.values()), dtype=dtype).repeat(3, 1)
    coeffs[::7, 0] = 0.004  # some singular in a: gravitation in the kernel
    x = torch.randn(5, len(coeffs), 3, dtype=dtype, generator=torch.Generator().manual_seed(2))
    names = deu.subspaces(coeffs)
    assert set(names) == set(NEURONS)  # every subspace present
    reference = _run(x, coeffs, "torch", gravitation)
    fused = _run(x, coeffs, "cpp", gravitation)
    for what, r, f in zip(("value", "input grad", "coeff grad"), reference, fused, strict=True):
        tol = _TOL[dtype]
        if what == "coeff grad" and gravitation:
            tol = _GRAVITATION_TOL if dtype == torch.float64 else tol
            if dtype == torch.float32:
                # Ill-conditioned in float32: the c-gravitation gradient of the
                # quadratic ramp (a_b0_c0), whose neighbour c = 0.01 is a slow
                # oscillation; its dh/dc subtracts terms ~1/c^2 * (1 - cos(wt)).
                # Each float32 backend is off the float64 value by up to 1.6e-3
                # (measured), so they differ by as much: 5e-3 relative, checked
                # on these elements alone (a sign flip is a difference of 2).
                ramp = torch.tensor([n == "a_b0_c0" for n in names])
                _assert_each_element_close(f[ramp, 2], r[ramp, 2], (5e-3, 0.0), "ramp dh/dc")
                f, r = f.clone(), r.clone()
                f[ramp, 2] = r[ramp, 2] = 0.0
        _assert_each_element_close(f, r, tol, what)


@pytest.mark.parametrize(
    "make_input,dim",
    [
        (lambda: torch.randn(3, 4, 10, dtype=torch.float64), -1),
        (lambda: torch.randn(5, 10, 3, dtype=torch.float64).permute(2, 1, 0), 1),
        (
            lambda: torch.randn(2, 10, 3, 3, dtype=torch.float64).to(
                memory_format=torch.channels_last
            ),
            1,
        ),
        (lambda: torch.randn(0, 10, dtype=torch.float64), 1),
    ],
    ids=["dim=-1", "permuted", "channels_last", "empty batch"],
)
@pytest.mark.parametrize("gravitation", [False, True])
def test_the_cpu_kernel_agrees_on_any_layout_and_an_empty_batch(
    cpu_kernel, make_input, dim, gravitation
):
    coeffs = torch.tensor(list(NEURONS.values()), dtype=torch.float64)
    torch.manual_seed(0)
    base = make_input()
    outputs = {}
    for backend in ("torch", "cpp"):
        x = base.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        c = coeffs.clone().requires_grad_()
        y = F.deu(x, c, dim=dim, backend=backend, gravitation=gravitation)
        y.sum().backward()
        assert y.stride() == torch.empty_like(x).stride()  # the input's layout
        outputs[backend] = (y.detach(), x.grad, c.grad)
    tolerances = [(1e-12, 1e-12)] * 2 + [_GRAVITATION_TOL if gravitation else (1e-12, 1e-12)]
    for r, f, (rtol, atol) in zip(outputs["torch"], outputs["cpp"], tolerances, strict=True):
        assert torch.allclose(f, r, rtol=rtol, atol=atol)


def test_nan_inputs_give_nan_in_their_own_elements_on_every_backend(cpu_kernel):
    coeffs = torch.tensor(list(NEURONS.values()))
    x = torch.randn(4, len(coeffs))
    x[1] = float("nan")
    for backend in ("torch", "cpp"):
        y = F.deu(x, coeffs, backend=backend)
        assert torch.isnan(y[1]).all(), backend
        assert torch.isfinite(y[[0, 2, 3]]).all(), backend


def _float_kernel_against_float64(coeffs, t, max_value=1e7, max_exponent=4.0):
    """The fused kernel's float32 values and slopes, and the PyTorch path's in
    float64 at the same (float32) inputs."""
    c = torch.tensor([coeffs])
    x32 = t.float().reshape(-1, 1).requires_grad_()
    x64 = x32.detach().double().requires_grad_()
    settings = dict(max_value=max_value, max_exponent=max_exponent)
    y32 = F.deu(x32, c, backend="cpp", **settings)
    y64 = F.deu(x64, c.double(), backend="torch", **settings)
    y32.sum().backward()
    y64.sum().backward()
    return (y32.detach().double(), x32.grad.double()), (y64.detach(), x64.grad)


@pytest.mark.parametrize("max_exponent", [4.0, 14.0, 80.0])
def test_the_float_kernels_exp_is_accurate_over_its_whole_range(cpu_kernel, max_exponent):
    # a = 0, b = 1, c = -1, c1 = 1: y = e^t for t < 0 and 2 e^t - 1 for t > 0,
    # with the exponent clamped to [-60, max_exponent] (80: the largest cap, near
    # float32's limit). The kernel computes this exp inline in float (degree-7
    # Taylor after reduction by ln 2).
    t = torch.linspace(-70.0, max_exponent + 2.0, 200_001)
    (y, dy), (y_ref, dy_ref) = _float_kernel_against_float64(
        (0.0, 1.0, -1.0, 1.0, 0.0), t, max_value=1e38, max_exponent=max_exponent
    )
    float_ulp = 2.0**-23
    # Measured: at most 1 ulp off the exact value.
    assert ((y - y_ref).abs() <= 2 * float_ulp * y_ref.abs()).all()
    assert ((dy - dy_ref).abs() <= 2 * float_ulp * dy_ref.abs()).all()


def test_the_float_kernels_sin_and_cos_are_accurate_beyond_their_fast_range(cpu_kernel):
    # a = c = 1, c1 = c2 = 1: y = cos t + sin t for t < 0, 1 + sin t for t > 0.
    # The kernel reduces |t| <= 8192 itself and hands vectors with a larger
    # argument to SLEEF: large arguments of both signs, log-uniform from 1e3 to
    # 1e30 (its own reduction is off by 4e-6 from 1e6 on, by whole units from
    # 1e7), alone and mixed into vectors of small ones.
    generator = torch.Generator().manual_seed(0)
    huge = 10 ** (torch.rand(20_000, generator=generator) * 27 + 3)
    huge = huge * torch.where(torch.rand(20_000, generator=generator) < 0.5, -1.0, 1.0)
    small = torch.linspace(-20_000.0, 20_000.0, 400_001)
    mixed = small.clone()
    mixed[::37] = huge[: len(mixed[::37])]
    t = torch.cat([small, huge, mixed])
    (y, dy), (y_ref, dy_ref) = _float_kernel_against_float64((1.0, 0.0, 1.0, 1.0, 1.0), t)
    # Values up to 2, whose float ulp is 2.4e-7; measured: at most 2.2e-7.
    assert (y - y_ref).abs().max() <= 3e-7
    assert (dy - dy_ref).abs().max() <= 3e-7


def test_unclassifiable_neurons_raise_the_same_error_on_both_backends(cpu_kernel):
    good = [0.5, 1.7, 0.6, 0.1, 0.2]
    # Themselves, even for an empty batch: b^2 - 4ac = inf - inf in float32.
    huge = torch.tensor([good, [1e20, 1e20, 1e20, 0.0, 0.0]])
    messages = {}
    for backend in ("torch", "cpp"):
        with pytest.raises(ValueError, match="neurons 1 fall in no subspace") as error:
            F.deu(torch.randn(0, 2), huge, backend=backend)
        messages[backend] = str(error.value).splitlines()[0]
    assert messages["torch"] == messages["cpp"]
    # Their gravitation neighbour: a_b0_c0 neurons whose c moved to epsilon =
    # 1e-30 gives a*c = 1e-50, zero in float32; the forward is fine.
    tiny = torch.tensor([good, [1e-20, 0.0, 0.0, 0.1, 0.2]] * 2)
    for backend in ("torch", "cpp"):
        x = torch.randn(4, 4, requires_grad=True)
        y = F.deu(
            x,
            tiny.clone().requires_grad_(),
            epsilon=1e-30,
            gravitation="neighbour",
            backend=backend,
        )
        with pytest.raises(
            ValueError, match=r"neurons 1, 3 have a gravitation neighbour \(c "
        ) as error:
            y.sum().backward()
        messages[backend] = str(error.value).splitlines()[0]
    assert messages["torch"] == messages["cpp"]
    assert "a, b, c = 1e-20, 0, 0" in messages["cpp"]


def test_a_failed_kernel_build_falls_back_with_one_warning(monkeypatch):
    import torch.utils.cpp_extension as cpp_extension

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(cpp_extension, "load", broken)
    monkeypatch.setattr(_cpp, "_state", {})
    coeffs = torch.tensor([NEURONS["a_b_c_disc_neg"]])
    x = torch.randn(4, 1)
    with pytest.warns(RuntimeWarning, match="building the fused CPU kernel failed.*no compiler"):
        y = F.deu(x, coeffs, backend="cpp")
    assert torch.equal(y, F.deu(x, coeffs, backend="torch"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.deu(x, coeffs, backend="cpp")  # no second warning


def test_a_build_lock_left_by_a_killed_build_is_removed_not_waited_on(cpu_kernel, tmp_path):
    # torch's loader waits, silently and forever, for a `lock` file that only the
    # process building the extension removes; one killed mid-build leaves it.
    # A copy of the built folder (so nothing is compiled) with such a lock in it:
    built = Path(cpu_kernel.__file__).parent
    copy = tmp_path / built.name
    shutil.copytree(built, copy, symlinks=True)
    (copy / "lock").touch()
    (copy / "deu.flock").unlink(missing_ok=True)
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path))
    script = (
        "import warnings; warnings.simplefilter('always')\n"
        "from deu import _cpp\n"
        "assert _cpp.load() is not None, 'the kernel did not load'\n"
        "print(_cpp.load().__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(copy / built.name) + ".so", done.stdout
    assert f"removed {copy / 'lock'}, left by a process that stopped while building" in done.stderr
    assert not (copy / "lock").exists()


def test_a_build_in_progress_is_waited_for_not_broken(cpu_kernel, tmp_path):
    # While one process holds the build folder's flock, another waits for it
    # rather than taking torch's `lock` file for stale.
    fcntl = pytest.importorskip("fcntl")
    built = Path(cpu_kernel.__file__).parent
    copy = tmp_path / built.name
    shutil.copytree(built, copy, symlinks=True)
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path))
    script = "from deu import _cpp\nassert _cpp.load() is not None\nprint('loaded')\n"
    with open(copy / "deu.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        (copy / "lock").touch()  # the holder is "building"
        waiter = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
        )
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(timeout=5)
        assert (copy / "lock").exists()
        (copy / "lock").unlink()  # the holder finishes its build
        fcntl.flock(handle, fcntl.LOCK_UN)
    out, _ = waiter.communicate(timeout=240)
    assert waiter.returncode == 0 and out.strip() == "loaded"


def test_unknown_or_misplaced_backends_are_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        F.deu(torch.randn(2, 1), torch.zeros(1, 5), backend="maple")


def test_the_generated_header_compiles_as_plain_cpp(tmp_path):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler on PATH")
    probe = tmp_path / "probe.cpp"
    probe.write_text(
        '#include "deu_kernels.h"\n'
        "int main() { double k[deu_generated::MAX_NEURON_QUANTITIES] = {1.0};\n"
        "  double out[7]; deu_generated::derivatives<double>(1, 0.5, k, out);\n"
        "  return deu_generated::value<float>(0, 0.5f, (const float*)nullptr) == 0 ? 2 : 0; }\n"
    )
    result = subprocess.run(
        [compiler, "-std=c++17", "-Wall", "-Werror", "-fsyntax-only", f"-I{GENERATED}", str(probe)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(
    "shape,dim",
    [
        ((37, 35), 1),  # (N, C): gathered across rows, a partial last vector
        ((3, 20, 13), 1),  # rows of 13: one full vector and a tail
        ((2, 3, 5), 1),  # rows shorter than a vector: gathered across rows
        ((20000, 3), 1),  # several row chunks per neuron: partial sums added in order
        ((2, 40, 8), 1),  # several neuron blocks; rows of exactly one float64x4 pair
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_cpu_kernel_agrees_across_vector_tails_gathers_and_tiles(cpu_kernel, shape, dim, dtype):
    neurons = shape[dim]
    coeffs = torch.tensor(list(NEURONS.values()), dtype=dtype).repeat(neurons // 10 + 1, 1)
    coeffs = coeffs[torch.randperm(len(coeffs), generator=torch.Generator().manual_seed(3))]
    coeffs = coeffs[:neurons]
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(4)) * 2
    reference = _run(x, coeffs, "torch", gravitation=False)
    fused = _run(x, coeffs, "cpp", gravitation=False)
    for what, r, f in zip(("value", "input grad", "coeff grad"), reference, fused, strict=True):
        _assert_each_element_close(f, r, _TOL[dtype], what)


@pytest.mark.parametrize("critical", ["nearest", "paper"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_kernel_applies_the_subspace_rules_of_the_runtime(cpu_kernel, critical, dtype):
    from deu._subspaces import classify

    generator = torch.Generator().manual_seed(5)
    eps = 0.01
    # Random coefficients, values at and around +-epsilon, and critical-band
    # neighbourhoods (b^2 - 4ac within and just outside +-epsilon).
    edges = torch.tensor([0.0, eps, -eps, eps * (1 - 1e-7), eps * (1 + 1e-7), 1.0, -1.0])
    grid = torch.cartesian_prod(edges, edges, edges)
    a = torch.rand(500, generator=generator) + 0.1
    b = (torch.rand(500, generator=generator) - 0.5) * 4
    offset = (torch.rand(500, generator=generator) - 0.5) * 4 * eps
    band = torch.stack([a, b, (b * b - offset) / (4 * a)], 1)
    random = (torch.rand(1000, 3, generator=generator) - 0.5) * 0.1
    # Rows no rule takes in float32 (b^2 - 4ac = inf - inf).
    unclassifiable = torch.tensor([[1e20, 1e20, 1e20], [-1e20, 1e20, -1e20]])
    abc = torch.cat([grid, band, -band, random, unclassifiable]).to(dtype)
    coeffs = torch.cat([abc, torch.randn(len(abc), 2, generator=generator).to(dtype)], 1)
    effective, index = classify(coeffs, eps, critical)
    kernel_effective, kernel_index = cpu_kernel.classify(coeffs, eps, critical == "paper")
    assert torch.equal(kernel_index, index)
    assert torch.equal(kernel_effective, effective)  # bit for bit
    if dtype == torch.float32:
        assert (index[-2:] == -1).all()
