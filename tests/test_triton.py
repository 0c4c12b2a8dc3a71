"""The Triton backend under Triton's interpreter (TRITON_INTERPRET=1, CPU tensors)
computes what the generated PyTorch path computes."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

import deu
from deu import _subspaces as deu_subspaces
from deu import functional as F
from deu._subspaces import SUBSPACE_NAMES

# triton.jit reads TRITON_INTERPRET when a function is decorated, and triton's
# own library functions (tl.sum, tl.sigmoid, ...) are decorated when triton is
# imported: set it while triton and deu._triton are first imported, then
# restore it, so that the variable does not leak into other test modules; the
# fixture below sets it again for each test here (resolve_backend reads it).
_saved = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
try:
    triton = pytest.importorskip(
        "triton", reason="triton is not installed (it is in the dev extra)"
    )
    from triton.runtime.interpreter import InterpretedFunction

    from deu import _triton
finally:
    if _saved is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = _saved

# False where triton was imported before this module without TRITON_INTERPRET
# (torch imports it too, e.g. with torch._dynamo): then the last test runs this
# file in a fresh process instead.
IN_PROCESS = _triton.INTERPRETED and isinstance(triton.language.standard.sum, InterpretedFunction)


@pytest.fixture(autouse=True)
def interpreter(request, monkeypatch):
    if not IN_PROCESS and request.node.name != "test_this_file_passes_in_a_fresh_process":
        pytest.skip("triton was imported without TRITON_INTERPRET=1: run in a fresh process")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    yield
    # A kernel that failed would have been replaced by the PyTorch path (with a
    # warning), and every comparison below would pass: fail the test instead.
    assert "failed" not in _triton._state, _triton._state.get("failed")


# One neuron well inside each subspace; a_b_c_disc_zero twice: exactly critical,
# and inside the band but not critical, where the two critical rules differ.
NEURONS = [
    (0.0, 0.0, 1.3, 0.0, 0.0),  # a0_b0_c
    (0.0, 0.8, 0.0, 0.2, 0.0),  # a0_b_c0
    (0.0, -0.9, 0.6, 0.1, 0.0),  # a0_b_c
    (0.7, 0.0, 0.0, 0.1, -0.3),  # a_b0_c0
    (-0.8, 0.0, -1.1, 0.3, 0.2),  # a_b0_c_pos
    (0.9, 0.0, -0.7, 0.1, 0.1),  # a_b0_c_neg
    (-0.6, 0.9, 0.0, 0.2, 1.0),  # a_b_c0
    (0.5, 1.7, 0.6, 0.1, 0.2),  # a_b_c_disc_pos
    (0.5, 1.2, 0.72, 0.1, 0.3),  # a_b_c_disc_zero
    (1.1, -0.4, 0.9, 0.3, 0.1),  # a_b_c_disc_neg
    (0.5, 1.2, 0.718, -0.2, 0.4),  # a_b_c_disc_zero, in the band
    (0.004, 0.9, -0.5, 0.1, 0.0),  # a_b_c0 by |a| < epsilon: gravitation in a
]


def _population(dtype=torch.float64, repeat=1):
    coeffs = torch.tensor(NEURONS, dtype=dtype).repeat(repeat, 1)
    assert set(deu.subspaces(coeffs)) == set(deu.SUBSPACE_NAMES)  # every subspace
    return coeffs


def _run(x, coeffs, backend, **settings):
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    coeffs = coeffs.clone().requires_grad_()
    y = F.deu(x, coeffs, backend=backend, steepness=3.0, **settings)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    y.backward(g)
    return y.detach(), x.grad, coeffs.grad


# Per element, against each element's own size, with a floor (the same number)
# for elements near 0: |triton - torch| <= tol * |torch| + tol. Measured worst
# |triton - torch| / (|torch| + 1) over this file's inputs, all subspaces:
# float64 3.3e-15 (values and input gradients differ by an ulp of exp, sin,
# cos and sigmoid, NumPy's against PyTorch's; the coefficient gradients also
# by the summation order: per block, then the blocks); float32 1.6e-6.
# Gravitation is PyTorch's own code on both paths, fed the same inputs.
TOLERANCES = {torch.float64: 1e-13, torch.float32: 1e-5}


def _assert_agree(reference, triton_result, dtype):
    for what, r, f in zip(
        ("value", "input grad", "coeff grad"), reference, triton_result, strict=True
    ):
        assert f.dtype == r.dtype and f.shape == r.shape, what
        rtol = floor = TOLERANCES[dtype]
        error = (f - r).abs()
        allowed = rtol * r.abs() + floor
        worst = int((error - allowed).flatten().argmax()) if error.numel() else 0
        assert (error <= allowed).all(), (
            f"{what}: element {worst} is {f.flatten()[worst].item()!r}, the PyTorch path's "
            f"{r.flatten()[worst].item()!r} (allowed: {rtol:g} relative + {floor:g})"
        )


LAYOUTS = {
    # (N, C) with 37 rows: float64 tiles are 16 rows by 16 neurons, so the
    # third row block and the 16-neuron tiles (groups of 2 or 4) are partial.
    "(N, C)": (lambda dtype: torch.randn(37, 24, dtype=dtype), 1),
    # (N, C, H, W): 3 * 13 * 15 = 585 elements per neuron, float64 tiles of
    # 512: two row blocks' partial sums, the second block partial.
    "(N, C, H, W)": (lambda dtype: torch.randn(3, 12, 13, 15, dtype=dtype), 1),
    "channels_last": (
        lambda dtype: torch.randn(2, 12, 3, 3, dtype=dtype).to(memory_format=torch.channels_last),
        1,
    ),
    "dim=-1": (lambda dtype: torch.randn(3, 4, 12, dtype=dtype), -1),
    "permuted": (lambda dtype: torch.randn(5, 12, 3, dtype=dtype).permute(2, 1, 0), 1),
    "empty batch": (lambda dtype: torch.randn(0, 12, dtype=dtype), 1),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "gravitation", [False, "derived", "neighbour"], ids=["no gravitation", "derived", "neighbour"]
)
def test_every_subspace_and_gradient_equals_the_pytorch_path_in_every_layout(layout, gravitation):
    make, dim = LAYOUTS[layout]
    torch.manual_seed(0)
    x = make(torch.float64) * 1.5
    coeffs = _population(repeat=2 if layout == "(N, C)" else 1)
    reference = _run(x, coeffs, "torch", dim=dim, gravitation=gravitation)
    result = _run(x, coeffs, "triton", dim=dim, gravitation=gravitation)
    assert result[0].stride() == torch.empty_like(x).stride()  # the input's layout
    _assert_agree(reference, result, torch.float64)


@pytest.mark.parametrize("critical", ["nearest", "paper"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_both_critical_rules_and_both_dtypes_equal_the_pytorch_path(critical, dtype):
    coeffs = _population(dtype)
    x = torch.randn(9, len(coeffs), 4, dtype=dtype, generator=torch.Generator().manual_seed(2))
    reference = _run(x, coeffs, "torch", critical=critical)
    result = _run(x, coeffs, "triton", critical=critical)
    _assert_agree(reference, result, dtype)


def test_the_critical_rules_really_differ_here():
    # Otherwise the test above would not tell the two rules apart.
    coeffs = _population()
    x = torch.linspace(-2, 2, 5, dtype=torch.float64)[:, None].expand(5, len(coeffs))
    nearest = F.deu(x, coeffs, backend="triton", critical="nearest")
    paper = F.deu(x, coeffs, backend="triton", critical="paper")
    assert not torch.allclose(nearest[:, -2], paper[:, -2])


def test_clamped_outputs_and_half_precision_follow_the_pytorch_path():
    coeffs = _population(torch.float32)
    # Inputs up to ~20: beyond that the growing oscillations' values are small
    # differences of terms e^(0.2 t), and float32 rounding of those terms is
    # no longer small against the value itself.
    x = torch.randn(6, len(coeffs), generator=torch.Generator().manual_seed(3)) * 8
    for settings in ({"max_value": 2.0}, {"max_value": 1000.0}):
        reference = _run(x, coeffs, "torch", **settings)
        result = _run(x, coeffs, "triton", **settings)
        _assert_agree(reference, result, torch.float32)
    half = F.deu(x.to(torch.bfloat16), coeffs, backend="triton")
    assert half.dtype == torch.bfloat16
    # Computed in float32 by both: equal up to bfloat16's rounding (2^-8 relative).
    reference = F.deu(x.to(torch.bfloat16), coeffs, backend="torch")
    assert torch.allclose(half.float(), reference.float(), rtol=2**-7, atol=1e-6)


def test_only_the_requested_gradients_are_computed():
    coeffs = _population()
    x = torch.randn(7, len(coeffs), dtype=torch.float64, requires_grad=True)
    for backend in ("torch", "triton"):
        y = F.deu(x, coeffs, backend=backend)  # coeffs need no gradient
        (grad,) = torch.autograd.grad(y.sum(), x)
        if backend == "torch":
            reference = grad
    assert torch.allclose(grad, reference, rtol=1e-13, atol=1e-13)
    c = coeffs.clone().requires_grad_()
    grads = [
        torch.autograd.grad(F.deu(x.detach(), c, backend=b).sum(), c)[0]
        for b in ("torch", "triton")
    ]
    assert torch.allclose(grads[1], grads[0], rtol=1e-13, atol=1e-13)


def test_coefficient_gradients_are_bitwise_reproducible():
    coeffs = _population(torch.float32, repeat=3)
    x = torch.randn(300, len(coeffs), generator=torch.Generator().manual_seed(4))
    first = _run(x, coeffs, "triton")
    again = _run(x, coeffs, "triton")
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)


def test_triton_on_cpu_tensors_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        F.deu(torch.randn(2, 1), torch.tensor([NEURONS[1]]), backend="triton")


def test_auto_picks_triton_for_gpu_tensors_only(monkeypatch):
    from deu import _cpp

    monkeypatch.setattr(_cpp, "available", lambda: False)  # no build of the CPU kernel
    assert F.resolve_backend("auto", torch.device("cuda", 0)) == "triton"
    assert F.resolve_backend("auto", torch.device("cpu")) == "torch"
    assert F.resolve_backend("triton", torch.device("cpu")) == "triton"  # interpreter set
    with pytest.raises(ValueError, match="CUDA and ROCm devices; the input is on meta"):
        F.resolve_backend("triton", torch.device("meta"))


class _Broken:
    """A kernel whose every launch fails, as one that cannot compile would."""

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            raise RuntimeError("no such GPU")

        return launch


def test_a_kernel_that_fails_falls_back_to_pytorch_with_one_warning(monkeypatch):
    monkeypatch.setattr(_triton, "forward_kernel", _Broken())
    monkeypatch.setattr(_triton, "_state", {})
    coeffs = torch.tensor([NEURONS[9]])
    x = torch.randn(4, 1)
    with pytest.warns(RuntimeWarning, match="Triton kernel failed.*no such GPU"):
        y = F.deu(x, coeffs, backend="triton")
    assert torch.equal(y, F.deu(x, coeffs, backend="torch"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.deu(x, coeffs, backend="triton")  # no second warning
    monkeypatch.setattr(_triton, "_state", {})  # for the fixture's check


def test_a_classification_kernel_that_fails_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(_triton, "classify_kernel", _Broken())
    monkeypatch.setattr(_triton, "_state", {})
    coeffs = torch.tensor(NEURONS[7:10], requires_grad=True)
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="Triton kernel failed.*no such GPU"):
        y = F.deu(x, coeffs, backend="triton")
    y.sum().backward()  # the backward falls back as well, silently
    expected = F.deu(x, coeffs, backend="torch")
    assert torch.equal(y, expected)
    monkeypatch.setattr(_triton, "_state", {})  # for the fixture's check


def test_the_operator_passes_opcheck_with_the_triton_backend():
    from deu._autograd import deu_forward

    coeffs = _population()
    for x in (
        torch.randn(3, len(coeffs), dtype=torch.float64),
        torch.randn(2, len(coeffs), 3, dtype=torch.float64),
    ):
        args = (
            x.requires_grad_(),
            coeffs.clone().requires_grad_(),
            1,
            0.01,
            3.0,
            4.0,
            1000.0,
            "derived",
            "nearest",
            "triton",
        )
        torch.library.opcheck(deu_forward, args)


def test_torch_compile_traces_the_triton_backend_in_one_graph():
    # aot_eager: Dynamo and AOTAutograd trace the operator (fullgraph: no graph
    # break in the backend selection); inductor's C++ build would add a minute.
    coeffs = _population().requires_grad_()

    def loss(x):
        return F.deu(x, coeffs, backend="triton").square().sum()

    x = torch.randn(5, len(coeffs), dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    value = compiled(x)
    value.backward()
    grads = (x.grad.clone(), coeffs.grad.clone())
    x.grad, coeffs.grad = None, None
    reference = loss(x)
    reference.backward()
    assert torch.equal(value, reference)
    assert torch.equal(grads[0], x.grad) and torch.equal(grads[1], coeffs.grad)


def test_without_triton_auto_uses_pytorch_on_a_gpu_and_triton_is_refused(monkeypatch):
    monkeypatch.setitem(F._TRITON_IMPORTS, "triton", False)
    assert F.resolve_backend("auto", torch.device("cuda", 0)) == "torch"
    with pytest.raises(ValueError, match="needs the triton package"):
        F.resolve_backend("triton", torch.device("cuda", 0))


def test_the_runtime_works_where_triton_cannot_be_imported():
    # sys.modules["triton"] = None makes `import triton` raise ImportError, as
    # on a CPU-only install without it (torch itself imports triton if present).
    script = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, deu\n"
        "from deu import functional as F\n"
        "m = deu.DEU(3, backend='torch'); x = torch.randn(2, 3, requires_grad=True)\n"
        "m(x).sum().backward()\n"
        "print(F.resolve_backend('auto', torch.device('cuda')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "torch"


def test_this_file_passes_in_a_fresh_process():
    if IN_PROCESS:
        pytest.skip("the tests above ran in this process, under the interpreter")
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_forward_and_backward_do_run_the_triton_kernels(monkeypatch):
    """Every comparison above would pass if backend="triton" quietly ran the
    PyTorch path: count the kernels' launches."""
    launches = {"classify_kernel": 0, "forward_kernel": 0, "backward_kernel": 0}

    class Counting:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            launches[self.name] += 1
            return self.kernel[grid]

    for name in launches:
        monkeypatch.setattr(_triton, name, Counting(name, getattr(_triton, name)))
    # ...and the PyTorch path must not run beside them (its classification counted).
    from deu import _values

    torch_path = []
    classify = _values.classify
    monkeypatch.setattr(_values, "classify", lambda *args: torch_path.append(1) or classify(*args))
    coeffs = torch.tensor(NEURONS[:4], dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = F.deu(x, coeffs, backend="triton")
    # One classification, then one kernel per subspace.
    assert launches == {"classify_kernel": 1, "forward_kernel": 4, "backward_kernel": 0}
    y.sum().backward()
    assert launches == {"classify_kernel": 2, "forward_kernel": 4, "backward_kernel": 4}
    assert torch_path == []


def _boundary_coefficients(dtype, epsilon, generator):
    """Coefficients on and around every edge of the classification's rules."""
    eps = torch.tensor(epsilon, dtype=dtype)  # epsilon as torch compares with it
    below, above = torch.nextafter(eps, -eps), torch.nextafter(eps, 2 * eps)
    rows = []
    edges = [0.0, -0.0, eps, -eps, below, -below, above, -above, 3 * eps, -2 * eps]
    for a in edges:  # every combination of edge values of a, b and c
        for b in edges:
            for c in edges:
                rows.append((a, b, c, 0.1, -0.2))
    # Around the critical band: b chosen so that b^2 - 4ac is near +-epsilon and 0.
    a = torch.empty(400, dtype=dtype).uniform_(-2, 2, generator=generator)
    c = torch.empty(400, dtype=dtype).uniform_(-2, 2, generator=generator)
    offset = torch.tensor([-1.0, -0.999999, 0.0, 0.999999, 1.0], dtype=dtype).repeat(80) * eps
    b = (4 * a * c + offset).abs().sqrt() * torch.where(a > 0, 1.0, -1.0).to(dtype)
    rows += torch.stack([a, b, c, c, a], 1).tolist()
    # Broad random values, NaNs (which no rule classifies), and huge and tiny ones.
    rows += (torch.randn(300, 5, generator=generator, dtype=dtype) * 3).tolist()
    rows += [(float("nan"), 1.0, 1.0, 0.0, 0.0), (1.0, 1.0, float("nan"), 0.0, 0.0)]
    rows += [(1e30, 3e30, 1e30, 0.0, 0.0), (1e-30, 1e-30, -1e-30, 0.0, 0.0)]
    return torch.tensor(rows, dtype=dtype)


def _bits(t):
    return t.view(torch.int64 if t.dtype == torch.float64 else torch.int32)


@pytest.mark.parametrize("critical", ["nearest", "paper"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("epsilon", [0.01, 0.3, 1e-30])
def test_the_classification_kernel_equals_the_pytorch_rules_bit_for_bit(critical, dtype, epsilon):
    # The kernel restates deu/_subspaces.py's classify; every neuron must land in
    # the same subspace with the same effective coefficients, to the bit (a
    # neuron in a different subspace is a different function).
    coeffs = _boundary_coefficients(dtype, epsilon, torch.Generator().manual_seed(3))
    params = torch.tensor([3.0, 1000.0, 4.0, epsilon], dtype=dtype)
    effective, index = _triton.classify(coeffs, params, critical)
    expected_effective, expected_index = deu_subspaces.classify(coeffs, epsilon, critical)
    assert torch.equal(index, expected_index)
    # Every subspace is reached, and unclassifiable neurons (-1), but at epsilon =
    # 1e-30 in float32, where a*c of the b = 0 neurons underflows to 0 (-1 too).
    reached = set(index.tolist())
    if epsilon == 1e-30 and dtype == torch.float32:
        reached |= {SUBSPACE_NAMES.index("a_b0_c_pos"), SUBSPACE_NAMES.index("a_b0_c_neg")}
    assert reached == set(range(10)) | {-1}, sorted(reached)
    nan = expected_effective.isnan()
    assert torch.equal(effective.isnan(), nan)
    different = (_bits(effective) != _bits(expected_effective)) & ~nan
    assert not different.any(), (coeffs[different.any(1)][:3], effective[different.any(1)][:3])


def test_no_coefficient_gradient_is_absurd_over_a_random_population_under_triton():
    """Issue 17's bound on the Triton backend: |d mean(y)/d coefficient| < 1e6 over
    the random population of test_gravitation.py (a smaller one: the interpreter
    is slow), standard-normal inputs, default settings. (Not compared with the
    other backends here: the c-gravitation of a_b_c0 neurons with |b| just above
    epsilon and |a| ~ 1-3 cancels, and all three backends differ there by up to
    4e-6 relative in float64; the cross-backend tests use well-conditioned
    populations.)"""
    from test_gravitation import random_population

    coeffs = random_population(2000, 0.01, seed=3)
    x = torch.randn(
        64, coeffs.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(4)
    )
    c = coeffs.clone().requires_grad_()
    F.deu(x, c, backend="triton").mean(0).sum().backward()
    worst = c.grad.abs().max(0).values
    assert torch.isfinite(c.grad).all()
    assert (worst < 1e6).all(), f"largest |d mean(y)/d(a, b, c, c1, c2)|: {worst.tolist()}"
