"""The runtime's rules against references written out here, on both backends.

The critical band (its sign condition and both critical rules) and the output
clamp, each checked against something the runtime does not compute: the
critically damped closed form, the ODE's state-space solution (a matrix
exponential), central differences of that solution, and torch.clamp.
Every call passes epsilon, critical and gravitation explicitly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import expm

import deu
from deu import _cpp
from deu import functional as F

EPS = 0.01
# The exponent cap the tests run with: the paper's, above every exponent they reach.
MAX_EXPONENT = 14.0
BACKENDS = ["torch", "cpp"]


def _backend(name: str) -> str:
    if name == "cpp" and not _cpp.available():
        pytest.skip("the fused CPU kernel could not be built here (see the warning)")
    return name


def ode_solution(a, b, c, c1, c2, t):
    """y(t) of a y'' + b y' + c y = u(t), y(0) = c1, y'(0) = c2, for a != 0.

    State (y, y') with x' = A x + (0, u/a); for t >= 0 the forced part comes from
    the augmented matrix [[A, (0, 1/a)], [0, 0]], whose exponential carries the
    integral of expm(A s) (0, 1/a) over [0, t]; for t < 0 only the homogeneous part.
    """
    m = np.zeros((3, 3))
    m[0, 1] = 1.0
    m[1, 0], m[1, 1], m[1, 2] = -c / a, -b / a, 1.0 / a
    out = []
    for ti in np.asarray(t, dtype=np.float64).ravel():
        e = expm(m * ti)
        forced = e[0, 2] if ti >= 0 else 0.0
        out.append(e[0, 0] * c1 + e[0, 1] * c2 + forced)
    return np.array(out)


def critical_solution(a, b, c1, c2, t):
    """The critically damped closed form (b^2 = 4ac, so c = b^2/(4a)), double root r = -b/(2a):
    y = 1/c + (c1 - 1/c) e^(rt) + (c2 - r (c1 - 1/c)) t e^(rt) for t >= 0, and the
    homogeneous c1 e^(rt) + (c2 - r c1) t e^(rt) for t < 0."""
    c = b * b / (4 * a)
    r = -b / (2 * a)
    t = np.asarray(t, dtype=np.float64)
    steady = np.where(t >= 0, 1 / c, 0.0)
    k1 = c1 - steady
    return steady + (k1 + (c2 - r * k1) * t) * np.exp(r * t)


def _deu(x, coeffs, backend, critical, **settings):
    # The references are uncapped: the cap sits well above every exponent here.
    settings = {
        "epsilon": EPS,
        "gravitation": False,
        "max_value": 1e6,
        "max_exponent": MAX_EXPONENT,
        **settings,
    }
    return F.deu(x, coeffs, critical=critical, backend=backend, **settings)


# |r t| <= 3.6 below: far from the exponent cap of 14. No t = 0, where y'' jumps
# by 1/a and central differences in t (gradcheck) would see the kink.
T = np.linspace(-3.0, 3.0, 24)


def test_the_references_agree_with_each_other():
    # The closed form is the state-space solution on b^2 = 4ac (for both signs of r).
    for a, b, c1, c2 in ((0.5, 1.2, 0.1, 0.3), (-0.5, 1.2, -0.2, 0.4), (0.6, -1.2, 0.3, -0.1)):
        expected = ode_solution(a, b, b * b / (4 * a), c1, c2, T)
        np.testing.assert_allclose(critical_solution(a, b, c1, c2, T), expected, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("critical", ["nearest", "paper"])
@pytest.mark.parametrize("abc", [(0.02, 0.05, -0.02), (-0.02, 0.05, 0.02), (0.1, -0.06, -0.015)])
def test_a_and_c_of_opposite_signs_are_never_critical(abc, critical, backend):
    """|b^2 - 4ac| < epsilon, but sign(a) != sign(c): an overdamped neuron of its
    own (real roots of opposite signs) under either critical rule, with the value
    and the gradients of its own equation."""
    backend = _backend(backend)
    a, b, c = abc
    assert abs(b * b - 4 * a * c) < EPS and min(abs(a), abs(b), abs(c)) > EPS  # in the band
    coeffs = torch.tensor([[a, b, c, 0.2, -0.1]], dtype=torch.float64)
    assert deu.subspaces(coeffs, epsilon=EPS) == ["a_b_c_disc_pos"]
    x = torch.tensor(T).reshape(-1, 1)
    y = _deu(x, coeffs, backend, critical)
    # The state-space solution is accurate to ~1e-14 of its terms (up to e^8.6
    # here), the kernels to a few ulp of theirs: 1e-10 is ample, and a critical
    # rule applied here moves y by O(1) (y(1) of the first case: 13.76 -> 11.47).
    expected = ode_solution(a, b, c, 0.2, -0.1, T)
    np.testing.assert_allclose(y.numpy().ravel(), expected, rtol=1e-10, atol=1e-10)
    # Its own gradients: those of the function computed (finite differences).
    xs = x.clone().requires_grad_()
    cs = coeffs.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, c: _deu(x, c, backend, critical), (xs, cs), eps=1e-6, atol=1e-6, rtol=1e-5
    )


# Neurons inside the band |b^2 - 4ac| < epsilon with sign(a) == sign(c), and
# the equation each rule solves instead: "nearest" keeps a and b and sets
# c = b^2/(4a); "paper" sets a = |b|/2 sign(a), c = |b|/2 sign(c).
IN_BAND = [
    (0.5, 1.2, 0.724),  # disc = -0.008
    (-0.5, 1.2, -0.718),  # disc = +0.004, both negative: r = +1.2
    (0.5, -1.2, 0.717),  # disc = +0.006, b < 0: r = +1.2
    (0.02, 0.05, 0.02),  # small coefficients: disc = 0.0009
]


def _rule(a, b, c, critical):
    if critical == "nearest":
        return a, b, b * b / (4 * a)
    half = abs(b) / 2
    return half * np.sign(a), b, half * np.sign(c)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("critical", ["nearest", "paper"])
@pytest.mark.parametrize("abc", IN_BAND)
def test_in_the_band_the_value_is_the_critical_solution_of_the_rules_equation(
    abc, critical, backend
):
    backend = _backend(backend)
    a, b, c = abc
    assert abs(b * b - 4 * a * c) < EPS
    ea, eb, ec = _rule(a, b, c, critical)
    assert eb * eb == pytest.approx(4 * ea * ec, rel=1e-15)  # the rule's equation is critical
    c1, c2 = 0.3, -0.2
    coeffs = torch.tensor([[a, b, c, c1, c2]], dtype=torch.float64)
    assert deu.subspaces(coeffs, epsilon=EPS) == ["a_b_c_disc_zero"]
    y = _deu(torch.tensor(T).reshape(-1, 1), coeffs, backend, critical)
    # Terms up to ~3 e^3.6 in size: 1e-12 is a few hundred ulp of them.
    expected = critical_solution(ea, eb, c1, c2, T)
    np.testing.assert_allclose(y.numpy().ravel(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("critical", ["nearest", "paper"])
@pytest.mark.parametrize("abc", IN_BAND[:3])
def test_in_the_band_the_gradients_are_the_ode_solutions_partials_at_the_rules_equation(
    abc, critical, backend
):
    """dy/d(a, b, c, c1, c2) inside the band: the partial derivatives of the ODE
    solution at the equation the rule solves (not those of the function computed,
    which is flat in c for "nearest"): central differences of the state-space
    solution across b^2 = 4ac, where it is smooth in the coefficients."""
    backend = _backend(backend)
    a, b, c = abc
    c1, c2 = 0.3, -0.2
    point = np.array([*_rule(a, b, c, critical), c1, c2])
    g = np.random.default_rng(0).standard_normal(len(T))
    coeffs = torch.tensor([[a, b, c, c1, c2]], dtype=torch.float64, requires_grad=True)
    y = _deu(torch.tensor(T).reshape(-1, 1), coeffs, backend, critical)
    y.backward(torch.tensor(g).reshape(-1, 1))
    h = 1e-5
    for j, name in enumerate(("a", "b", "c", "c1", "c2")):
        up, down = point.copy(), point.copy()
        up[j] += h
        down[j] -= h
        numeric = g @ (ode_solution(*up, T) - ode_solution(*down, T)) / (2 * h)
        # Truncation h^2 y''' ~ 1e-10 and rounding 1e-14/h ~ 1e-9 of terms up to
        # ~30: 1e-6 relative with a 1e-6 floor.
        assert coeffs.grad[0, j].item() == pytest.approx(numeric, rel=1e-6, abs=1e-6), name


# The output clamp: y = clamp(f, -M, M), so dy/d(anything) = 0 where |f| > M.
# Reference: torch.clamp applied to the unclamped function (max_value = 1e6),
# differentiated by torch. Neurons: a growing oscillation (b < 0), a ramp, a
# growing exponential, each beyond M = 2 on part of the inputs, and a ReLU
# (singular in a and c), whose gravitation gradients must not see the clamped
# elements either.
CLAMPED = [
    (1.1, -0.4, 0.9, 3.0, 1.0),
    (0.0, 0.5, 0.0, 0.2, 0.0),
    (0.0, 1.0, -1.0, 0.5, 0.0),
    (0.0, 1.0, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gravitation", [False, True])
def test_the_clamp_passes_no_gradient_where_it_is_active(gravitation, backend):
    backend = _backend(backend)
    bound = 2.0
    x = torch.linspace(-3.0, 3.0, 41, dtype=torch.float64).reshape(-1, 1).repeat(1, len(CLAMPED))
    x = x + 0.013 * torch.arange(len(CLAMPED))  # no element exactly at the bound
    coeffs = torch.tensor(CLAMPED, dtype=torch.float64)
    g = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    settings = {
        "epsilon": EPS,
        "critical": "nearest",
        "gravitation": gravitation,
        "max_exponent": MAX_EXPONENT,
    }

    def gradients(reference: bool):
        xs, cs = x.clone().requires_grad_(), coeffs.clone().requires_grad_()
        if reference:
            y = F.deu(xs, cs, max_value=1e6, backend="torch", **settings).clamp(-bound, bound)
        else:
            y = F.deu(xs, cs, max_value=bound, backend=backend, **settings)
        y.backward(g)
        return y.detach(), xs.grad, cs.grad

    y, gx, gc = gradients(reference=False)
    y_ref, gx_ref, gc_ref = gradients(reference=True)
    active = y_ref.abs() >= bound
    assert active.any(dim=0).all() and (~active).any(dim=0).all()  # each neuron: both kinds
    assert torch.equal(y.abs() >= bound, active)
    assert (gx[active] == 0).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    # Sums of the unclamped elements' terms only (gravitation's too): 1e-12, and
    # gravitation's 1e-10 relative (its neighbour's cancellation, see test_backends).
    torch.testing.assert_close(gc, gc_ref, rtol=1e-10 if gravitation else 1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_band_is_open_and_the_subspace_boundaries_are_exact(backend):
    """|b^2 - 4ac| == epsilon is outside the band (b^2 - 4ac > 0: overdamped),
    just below it is inside; a*c that rounds to zero (float32, a tiny epsilon)
    falls in no subspace for either sign of c rather than being guessed."""
    backend = _backend(backend)
    eps = 0.25  # a power of two: disc = 1.5^2 - 4 * 1 * 0.5 = 0.25 exactly
    on_edge = torch.tensor([[1.0, 1.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    inside = torch.tensor([[1.0, 1.5, 0.5 + 2**-20, 0.0, 0.0]], dtype=torch.float64)
    assert deu.subspaces(on_edge, eps) == ["a_b_c_disc_pos"]
    assert deu.subspaces(inside, eps) == ["a_b_c_disc_zero"]
    t = torch.linspace(-1, 2, 7, dtype=torch.float64).reshape(-1, 1)
    settings = dict(epsilon=eps, critical="nearest", gravitation=True, max_exponent=MAX_EXPONENT)
    y = F.deu(t, on_edge, backend=backend, **settings)
    expected = ode_solution(1.0, 1.5, 0.5, 0.0, 0.0, t.flatten().numpy())
    assert np.allclose(y.flatten().numpy(), expected, rtol=1e-8, atol=1e-10)
    for c in (1e-25, -1e-25):  # a*c = 1e-50: zero in float32
        tiny = torch.tensor([[1e-25, 0.0, c, 0.0, 0.0]])
        with pytest.raises(ValueError, match="neurons 0 fall in no subspace"):
            F.deu(torch.zeros(2, 1), tiny, epsilon=1e-30, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_output_exactly_at_the_bound_keeps_its_gradient_as_torch_clamp_does(backend):
    backend = _backend(backend)
    # Ramps y = t and y = -t for t > 0 (a = c = 0, b = +-1): at t = 2 exactly at
    # the bounds +2 and -2; at t = 2.5 beyond them.
    x = torch.tensor([[2.0, 2.0], [1.0, 1.0], [2.5, 2.5]], dtype=torch.float64)
    x.requires_grad_()
    coeffs = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0, 0.0]])
    y = F.deu(
        x,
        coeffs.double(),
        epsilon=EPS,
        critical="nearest",
        gravitation=False,
        max_value=2.0,
        backend=backend,
    )
    assert y.tolist() == [[2.0, -2.0], [1.0, -1.0], [2.0, -2.0]]
    y.sum().backward()
    reference = x.detach().clone().requires_grad_()
    (reference * torch.tensor([1.0, -1.0], dtype=torch.float64)).clamp(-2.0, 2.0).sum().backward()
    assert x.grad.tolist() == reference.grad.tolist() == [[1.0, -1.0], [1.0, -1.0], [0.0, 0.0]]
