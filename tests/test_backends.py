"""Every backend computes what the generated PyTorch path computes."""

from __future__ import annotations

import shutil
import subprocess
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


@pytest.mark.parametrize("name", list(NEURONS))
@pytest.mark.parametrize("shape", [(6, 1), (3, 1, 4, 2)])
def test_the_cpu_kernel_agrees_with_the_pytorch_path_in_every_subspace(cpu_kernel, name, shape):
    coeffs = torch.tensor([NEURONS[name]], dtype=torch.float64)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1.5
    reference = _run(x, coeffs, "torch")
    fused = _run(x, coeffs, "cpp")
    for what, r, f in zip(("value", "input grad", "coeff grad"), reference, fused, strict=True):
        # Same formulas, different evaluation order only in the reductions.
        assert torch.allclose(f, r, rtol=1e-12, atol=1e-12), (name, what)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_the_cpu_kernel_agrees_on_a_mixed_population_with_gravitation(cpu_kernel, dtype, tol):
    coeffs = torch.tensor(list(NEURONS.values()), dtype=dtype).repeat(3, 1)
    coeffs[::7, 0] = 0.004  # some singular in a: gravitation goes through PyTorch kernels
    x = torch.randn(5, len(coeffs), 3, dtype=dtype, generator=torch.Generator().manual_seed(2))
    assert set(deu.subspaces(coeffs)) == set(NEURONS)  # every subspace present
    for r, f in zip(_run(x, coeffs, "torch"), _run(x, coeffs, "cpp"), strict=True):
        scale = r.abs().max().clamp_min(1)
        assert ((f - r).abs().max() / scale).item() < tol


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
def test_the_cpu_kernel_agrees_on_any_layout_and_an_empty_batch(cpu_kernel, make_input, dim):
    coeffs = torch.tensor(list(NEURONS.values()), dtype=torch.float64)
    torch.manual_seed(0)
    base = make_input()
    outputs = {}
    for backend in ("torch", "cpp"):
        x = base.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        c = coeffs.clone().requires_grad_()
        y = F.deu(x, c, dim=dim, backend=backend)
        y.sum().backward()
        assert y.stride() == torch.empty_like(x).stride()  # the input's layout
        outputs[backend] = (y.detach(), x.grad, c.grad)
    for r, f in zip(outputs["torch"], outputs["cpp"], strict=True):
        assert torch.allclose(f, r, rtol=1e-12, atol=1e-12)


def test_nan_inputs_give_nan_in_their_own_elements_on_every_backend(cpu_kernel):
    coeffs = torch.tensor(list(NEURONS.values()))
    x = torch.randn(4, len(coeffs))
    x[1] = float("nan")
    for backend in ("torch", "cpp"):
        y = F.deu(x, coeffs, backend=backend)
        assert torch.isnan(y[1]).all(), backend
        assert torch.isfinite(y[[0, 2, 3]]).all(), backend


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


def test_unknown_or_misplaced_backends_are_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        F.deu(torch.randn(2, 1), torch.zeros(1, 5), backend="maple")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH: not compiled")
def test_the_generated_cuda_source_compiles_with_nvcc(tmp_path):
    result = subprocess.run(
        [
            "nvcc",
            "-c",
            "-std=c++17",
            "-arch=sm_90",
            "-Xcompiler",
            "-Wall,-Werror",
            str(GENERATED / "deu_cuda.cu"),
            "-o",
            str(tmp_path / "deu_cuda.o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "deu_cuda.o").stat().st_size > 0


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
