"""The derived gravitation terms (derive/gravitation.py), checked independently.

In a subspace where p in (a, b, c) is zero, the layer's gradient in p is z_p,
the first-order change of y with p's term added to the ODE. Two kinds:

* p keeps the ODE's order: z_p is the exact derivative dy/dp at p = 0 of the
  smooth family. Checked against central differences across p = 0 of a
  state-space (matrix exponential) solution of the ODE written here, which
  knows nothing of subspaces.
* p raises the order: z_p is the outer term of y = y0 + p z + O(p^2). Checked
  against the construction written out here by hand, and for t > 0 against
  one-sided differences of the true second-order solution with a small a,
  whose fast mode has decayed there.

Every comparison is per element, against the element's own size with a stated
floor, on both backends, in float64.

The paper's rule (gravitation="neighbour") is checked against its construction
written out here: the moved coefficient, the band's nearest rule, the matched
initial conditions from a state-space solution and a 2x2 solve, and the
neighbour's derivative by central differences; for a and c next to a ReLU, b
next to the sigmoid (a first-order neighbour), the quadratic and the
oscillator, and a neighbour that lands in the critical band.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm

from deu import _cpp
from deu import functional as F

BACKENDS = ["torch", "auto"]


def gradient(x, coeffs, g, backend, **settings):
    """d(sum g*y)/d(coeffs), the layer's coefficient gradient."""
    c = coeffs.clone().requires_grad_()
    F.deu(x, c, backend=backend, **settings).backward(g)
    return c.grad


def per_point(t: torch.Tensor, coeffs: torch.Tensor, backend: str, p: int, **settings):
    """dy/dp at each point of t (a column), from the layer's gravitation: every
    point is its own neuron (the same coefficients), so each neuron's gradient
    is one element's."""
    n = t.numel()
    x = t.reshape(1, n)
    c = coeffs.reshape(1, 5).expand(n, 5).contiguous()
    grad = gradient(x, c, torch.ones_like(x), backend, **settings)
    return grad[:, p]


def assert_close_per_element(actual, expected, rtol, floor, what):
    """|actual - expected| <= rtol * |expected| + floor, element by element."""
    bad = (actual - expected).abs() > rtol * expected.abs() + floor
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} of {bad.numel()} elements differ, e.g. at "
        f"{int(bad.nonzero()[0])}: {actual[bad][0].item()} vs {expected[bad][0].item()}"
    )


# (coefficients, the zero coefficient p): order-keeping directions, each subspace.
ORDER_KEEPING = [
    ((0.0, 1.3, 0.0, 0.4, 0.0), 2),  # ReLU ramp, c
    ((0.0, -0.8, 0.0, 0.4, 0.0), 2),  # ramp with b < 0, c
    ((0.9, 0.0, 0.0, 0.3, -0.5), 1),  # rectified quadratic, b
    ((0.9, 0.0, 0.0, 0.3, -0.5), 2),  # rectified quadratic, c
    ((0.7, 0.0, 1.6, 0.2, 0.6), 1),  # undamped oscillation, b
    ((0.7, 0.0, -1.1, 0.2, 0.6), 1),  # hyperbolic, b
    ((0.6, 0.9, 0.0, -0.3, 0.4), 2),  # ramp with transient, c
    ((-0.6, 0.9, 0.0, -0.3, 0.4), 2),  # the same with a < 0, c
]


def state_space(t: np.ndarray, a: float, b: float, c: float, c1: float, c2: float):
    """y(t) of a y'' + b y' + c y = u(t), y(0) = c1, y'(0) = c2 (first order if
    a = 0: b y' + c y = u, y(0) = c1), by matrix exponentials: the state x = (y,
    y') or (y,) with x' = M x + e u, augmented by the constant input so that a
    singular M (c = 0) needs no inverse. Independent of the generated kernels."""
    if a == 0:
        m, e, x0 = np.array([[-c / b]]), np.array([1 / b]), np.array([c1])
    else:
        m = np.array([[0.0, 1.0], [-c / a, -b / a]])
        e, x0 = np.array([0.0, 1 / a]), np.array([c1, c2])
    n = len(x0)
    augmented = np.zeros((n + 1, n + 1))
    augmented[:n, :n], augmented[:n, n] = m, e
    out = []
    for ti in t:
        if ti > 0:
            out.append((expm(augmented * ti) @ np.append(x0, 1.0))[0])
        else:
            out.append((expm(m * ti) @ x0)[0])
    return np.array(out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("coeffs", "p"), ORDER_KEEPING)
def test_derived_gravitation_is_the_exact_derivative_where_the_order_stays(coeffs, p, backend):
    values = torch.tensor(coeffs, dtype=torch.float64)
    # |rate * t| stays below 14 here, so the cap is inactive.
    t = torch.linspace(-2.5, 2.5, 51, dtype=torch.float64)
    z = per_point(t, values, backend, p, max_exponent=14.0, max_value=1e12)

    def central(step: float) -> np.ndarray:
        up, down = list(coeffs), list(coeffs)
        up[p] += step
        down[p] -= step
        return (state_space(t.numpy(), *up) - state_space(t.numpy(), *down)) / (2 * step)

    # Central differences of the state-space solution across p = 0, Richardson
    # extrapolated: truncation O(h^4) ~ 1e-12, rounding ~1e-16 / h ~ 1e-13.
    h = 1e-3
    extrapolated = torch.from_numpy((4 * central(h) - central(2 * h)) / 3)
    scale = extrapolated.abs().max().item() + 1.0
    assert_close_per_element(z, extrapolated, 1e-8, 1e-10 * scale, f"dy/d{'abc'[p]} at 0")


def _relu_outer_term_in_a(t, b):
    """a y'' + b y' = u, a -> 0: y = c1 + t u/b - a u/b^2 + O(a^2) away from t = 0."""
    return -(t > 0).to(t.dtype) / b**2


def _first_order_outer_term_in_a(t, b, c, c1):
    """b y0' + c y0 = u, y0(0) = c1; z solves b z' + c z = -y0'' with z(0-) = 0.
    With lam = c/b: -y0'' = -c1 lam^2 e^{-lam t} + u (lam^2 e^{-lam t}/c - delta/b),
    a forcing at the mode's own rate, so z carries t e^{-lam t}:
    z = -(c1 lam^2 / b) t e^{-lam t} + u (lam^2 t e^{-lam t} / (b c) - e^{-lam t} / b^2)."""
    lam = c / b
    mode = torch.exp(-lam * t)
    step = (t > 0).to(t.dtype)
    return -(c1 * lam**2 / b) * t * mode + step * (lam**2 * t * mode / (b * c) - mode / b**2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_derived_gravitation_in_a_next_to_relu_is_the_outer_term(backend):
    t = torch.linspace(-3, 3, 121, dtype=torch.float64)
    for b in (1.0, 0.6, -0.7):
        coeffs = torch.tensor([0.0, b, 0.0, 0.25, 0.0], dtype=torch.float64)
        z = per_point(t, coeffs, backend, 0)
        assert_close_per_element(z, _relu_outer_term_in_a(t, b), 1e-12, 1e-14, f"b = {b}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_derived_gravitation_in_a_next_to_a_first_order_neuron_is_the_outer_term(backend):
    t = torch.linspace(-3, 3, 121, dtype=torch.float64)
    for b, c, c1 in ((1.0, 0.8, 0.3), (0.7, -0.4, -0.2), (-1.2, 0.5, 0.6)):
        coeffs = torch.tensor([0.0, b, c, c1, 0.0], dtype=torch.float64)
        z = per_point(t, coeffs, backend, 0, max_exponent=14.0)
        expected = _first_order_outer_term_in_a(t, b, c, c1)
        assert_close_per_element(z, expected, 1e-11, 1e-13, f"(b, c, c1) = {(b, c, c1)}")


def test_the_outer_term_is_the_small_a_limit_of_the_true_solution_for_t_above_zero():
    """For b > 0 and t > 0 the fast mode e^{-bt/a} of the second-order solution has
    decayed, and with y'(0) equal to the first-order neuron's own slope at 0-
    (no boundary layer there) (y(a) - y(0)) / a -> z_a, with an O(a) error."""
    b, c, c1 = 1.0, 0.8, 0.3
    t = torch.linspace(0.3, 3.0, 28, dtype=torch.float64)
    coeffs = torch.tensor([0.0, b, c, c1, -c * c1 / b], dtype=torch.float64)
    z = per_point(t, coeffs, "torch", 0, max_exponent=14.0)
    y0 = state_space(t.numpy(), 0.0, b, c, c1, 0.0)
    for a in (1e-3, 1e-4):
        ya = state_space(t.numpy(), a, b, c, c1, -c * c1 / b)
        difference = torch.from_numpy((ya - y0) / a)
        # The O(a) remainder, below 10 a relative to the term's size here (z
        # crosses 0 at t = 1.64, so the bound is on the scale of z, not per point).
        floor = 10 * a * z.abs().max().item()
        assert_close_per_element(z, difference, 0.0, floor, f"a = {a}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_derived_gravitation_next_to_the_sigmoid_is_the_outer_term(backend):
    """c y = sigmoid(s t): with b y' (a y'') added, c z = -y' (-y''), written out here."""
    s, c = 3.0, 1.5
    t = torch.linspace(-3, 3, 121, dtype=torch.float64)
    sig = torch.sigmoid(s * t)
    dy = s * sig * (1 - sig) / c
    d2y = s**2 * sig * (1 - sig) * (1 - 2 * sig) / c
    coeffs = torch.tensor([0.0, 0.0, c, 0.0, 0.0], dtype=torch.float64)
    z_a = per_point(t, coeffs, backend, 0, steepness=s)
    z_b = per_point(t, coeffs, backend, 1, steepness=s)
    assert_close_per_element(z_b, -dy / c, 1e-12, 1e-15, "dy/db of the sigmoid")
    assert_close_per_element(z_a, -d2y / c, 1e-12, 1e-15, "dy/da of the sigmoid")


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_gravitation_and_the_neighbour_rule_do_not_use_the_derived_terms(backend):
    """gravitation=False: zero gradient in a zero coefficient; "neighbour": the
    paper's neighbour gradient, which differs from the derived term."""
    t = torch.linspace(-1, 2, 31, dtype=torch.float64)
    coeffs = torch.tensor([0.0, 1.0, 0.0, 0.25, 0.0], dtype=torch.float64)
    off = per_point(t, coeffs, backend, 0, gravitation=False)
    assert (off == 0).all()
    x = t.reshape(-1, 1)
    grads = {}
    for rule in ("derived", "neighbour"):
        grads[rule] = gradient(
            x, coeffs.reshape(1, 5), torch.ones_like(x), backend, gravitation=rule
        )
    assert grads["derived"][0, 0].item() == pytest.approx(-(t > 0).sum().item(), rel=1e-12)
    assert not math.isclose(grads["neighbour"][0, 0].item(), grads["derived"][0, 0].item())
    # The coefficients that are not zero (b, c1, c2) get the same gradient under both.
    assert torch.equal(grads["derived"][0, [1, 3, 4]], grads["neighbour"][0, [1, 3, 4]])


def test_an_unknown_gravitation_rule_is_a_clear_error():
    x = torch.randn(2, 1)
    with pytest.raises(ValueError, match=r"gravitation must be True, False or one of .*got 'up'"):
        F.deu(x, torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]]), gravitation="up")


# --------------------------------------------------------------------------
# The paper's rule (gravitation="neighbour"), written out independently
# --------------------------------------------------------------------------

NEIGHBOUR_EPS = 0.1  # a wider epsilon keeps the neighbours' modes slow (rates ~ 1/eps)


def _value_and_slope(t: float, coeffs: tuple[float, ...]) -> tuple[float, float]:
    """y(t*) and y'(t*) of the state-space solution (a central difference in t)."""
    h = 1e-6
    y = state_space(np.array([t - h, t, t + h]), *coeffs)
    return y[1], (y[2] - y[0]) / (2 * h)


def _neighbour_gradient(
    x: np.ndarray, g: np.ndarray, f_coeffs, f_value, p: int, raw: float = 0.0, critical="nearest"
) -> float:
    """The paper's construction: p moved to +-epsilon (the sign of p's raw value
    ``raw``, which is inside the band |p| < epsilon; + for 0), a neighbour that
    lands in the critical band moved onto the critical equation (the nearest
    rule c = b^2/(4a), or the paper's a = |b|/2 sign(a), c = |b|/2 sign(c)),
    its initial conditions matched so that h(t*) = f(t*) and h'(t*) = f'(t*)
    at t* = the mean input (value only for a first-order neighbour), then sum
    g * dh/dp by central differences of the state-space solution."""
    moved = list(f_coeffs[:3])
    moved[p] = NEIGHBOUR_EPS * (-1.0 if raw < 0 else 1.0)
    a, b, c = moved
    if a != 0 and c != 0 and abs(b * b - 4 * a * c) < NEIGHBOUR_EPS and np.sign(a) == np.sign(c):
        if critical == "nearest":
            c = b * b / (4 * a)
        else:
            a, c = abs(b) / 2 * np.sign(a), abs(b) / 2 * np.sign(c)
    t_star = float(x.mean())
    target_value, target_slope = f_value(t_star)
    base = [_value_and_slope(t_star, (a, b, c, *ic)) for ic in ((0, 0), (1, 0), (0, 1))]
    if a == 0:  # first order: one constant, matched in value
        c1, c2 = (target_value - base[0][0]) / (base[1][0] - base[0][0]), 0.0
    else:
        m = np.array(
            [[base[1][k] - base[0][k], base[2][k] - base[0][k]] for k in (0, 1)], dtype=np.float64
        )
        rhs = np.array([target_value - base[0][0], target_slope - base[0][1]])
        c1, c2 = np.linalg.solve(m, rhs)
    h = 1e-5
    up, down = [a, b, c, c1, c2], [a, b, c, c1, c2]
    up[p] += h
    down[p] -= h
    derivative = (state_space(x, *up) - state_space(x, *down)) / (2 * h)
    return float((g * derivative).sum())


# (coefficients, the zero coefficient p, the neuron's y(t) written out here):
# first-order and second-order neighbours, and one that lands in the band.
NEIGHBOUR_CASES = [
    ((0.0, 1.0, 0.0, 0.3, 0.0), 0, "ReLU, a: second-order neighbour (eps, 1, 0)"),
    ((0.0, 1.0, 0.0, 0.3, 0.0), 2, "ReLU, c: first-order neighbour (0, 1, eps)"),
    ((0.0, 0.0, 1.5, 0.0, 0.0), 1, "sigmoid, b: first-order neighbour (0, eps, 1.5)"),
    ((0.9, 0.0, 0.0, 0.3, -0.5), 1, "quadratic, b: neighbour (0.9, eps, 0)"),
    ((0.7, 0.0, 1.6, 0.2, 0.6), 1, "oscillator, b: damped neighbour"),
    ((0.15, 0.0, 0.15, 0.2, 0.1), 1, "oscillator, b: neighbour in the critical band"),
]


def _own_value(coeffs, steepness):
    a, b, c, c1, c2 = coeffs
    if a == 0 and b == 0:  # the sigmoid core, written out
        return lambda t: (
            1 / (c * (1 + math.exp(-steepness * t))),
            steepness * math.exp(-steepness * t) / (c * (1 + math.exp(-steepness * t)) ** 2),
        )
    return lambda t: _value_and_slope(t, coeffs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("coeffs", "p", "what"), NEIGHBOUR_CASES, ids=[c[2] for c in NEIGHBOUR_CASES]
)
def test_the_neighbour_rule_is_the_papers_construction(coeffs, p, what, backend):
    steepness = 3.0
    gen = np.random.default_rng(p)
    x = 0.2 + 0.3 * gen.standard_normal(48)
    g = gen.standard_normal(48)
    expected = _neighbour_gradient(x, g, coeffs, _own_value(coeffs, steepness), p)
    c = torch.tensor([coeffs], dtype=torch.float64, requires_grad=True)
    xt = torch.from_numpy(x).reshape(-1, 1)
    y = F.deu(
        xt,
        c,
        epsilon=NEIGHBOUR_EPS,
        steepness=steepness,
        max_exponent=14.0,
        max_value=1e12,
        gravitation="neighbour",
        backend=backend,
    )
    y.backward(torch.from_numpy(g).reshape(-1, 1))
    # The reference's differences: O(h^2) in p and t; the 2x2 solve is well
    # conditioned for these slow neighbours. 1e-5 relative, a 1e-8 floor.
    got = c.grad[0, p].item()
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-8), what


# One layer of neurons, each with its own inputs (their means, t*, differ):
# raw coefficients inside the band |p| < epsilon of both signs, so the
# neighbours sit at +epsilon and at -epsilon, and one singular group (the
# oscillators) whose neighbours land in two subspaces (damped, and the band).
LAYER = [
    # (raw coefficients, the neuron's coefficients with |p| < epsilon at 0)
    ((0.0, 1.0, 0.0, 0.3, 0.0), (0.0, 1.0, 0.0, 0.3, 0.0)),  # ReLU
    ((-0.03, 1.0, 0.04, 0.3, 0.0), (0.0, 1.0, 0.0, 0.3, 0.0)),  # ReLU, a < 0 inside the band
    ((0.5, 1.7, 0.6, 0.1, 0.2), (0.5, 1.7, 0.6, 0.1, 0.2)),  # overdamped: no gravitation
    ((0.7, 0.0, 1.6, 0.2, 0.6), (0.7, 0.0, 1.6, 0.2, 0.6)),  # oscillator: damped neighbour
    ((0.15, -0.02, 0.15, 0.2, 0.1), (0.15, 0.0, 0.15, 0.2, 0.1)),  # b < 0: neighbour in the band
    ((0.9, 0.04, 0.0, 0.3, -0.5), (0.9, 0.0, 0.0, 0.3, -0.5)),  # quadratic
]


@pytest.mark.parametrize("critical", ["nearest", "paper"])
def test_the_neighbour_rule_per_neuron_in_a_layer(critical):
    steepness = 3.0
    gen = np.random.default_rng(7)
    n = len(LAYER)
    means = np.array([0.2, -0.3, 0.0, 0.5, 0.1, -0.1])
    x = means + 0.3 * gen.standard_normal((40, n))
    g = gen.standard_normal((40, n))
    raw = torch.tensor([r for r, _ in LAYER], dtype=torch.float64)
    grads = {
        backend: gradient(
            torch.from_numpy(x),
            raw,
            torch.from_numpy(g),
            backend,
            epsilon=NEIGHBOUR_EPS,
            steepness=steepness,
            max_exponent=14.0,
            max_value=1e12,
            gravitation="neighbour",
            critical=critical,
        )
        for backend in BACKENDS
    }
    checked = 0
    for j, (raw_j, coeffs) in enumerate(LAYER):
        for p in range(3):
            if coeffs[p] != 0:
                continue
            expected = _neighbour_gradient(
                x[:, j], g[:, j], coeffs, _own_value(coeffs, steepness), p, raw_j[p], critical
            )
            for backend, grad in grads.items():
                got = grad[j, p].item()
                assert got == pytest.approx(expected, rel=1e-5, abs=1e-8), (backend, j, p)
            checked += 1
    assert checked == 8
    # The backends against each other, per element: both compute in float64.
    assert_close_per_element(grads["auto"], grads["torch"], 1e-10, 1e-12, "auto vs torch")


# The neighbour rule's pieces, against their documented contracts
# --------------------------------------------------------------------------


def test_t_star_is_each_neurons_mean_input_ignoring_nan():
    from deu._neighbour import _mean_input

    x = torch.tensor([[1.0, 10.0], [3.0, float("nan")], [5.0, 20.0]], dtype=torch.float64)
    # Neuron 1 has a NaN: its mean ignores it; neuron 0's is its own mean.
    assert _mean_input(x, 1).tolist() == [3.0, 15.0]
    assert _mean_input(x.T.contiguous(), 0).tolist() == [3.0, 15.0]
    # (N, C, L): the mean over N and L, per channel.
    y = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4)
    assert _mean_input(y, 1).tolist() == [7.5, 11.5, 15.5]
    # All NaN, and a 1-d input (each element its own neuron): finite, NaN -> 0.
    assert _mean_input(torch.full((2, 1), float("nan")), 1).tolist() == [0.0]
    assert _mean_input(torch.tensor([2.0, float("nan")]), 0).tolist() == [2.0, 0.0]


def _tikhonov(m: list[list[float]], r: list[float], ridge) -> list:
    """argmin |m c - r|^2 + ridge |c|^2 = (m^T m + ridge I)^-1 m^T r, in 60 digits."""
    import mpmath

    mpmath.mp.dps = 60
    mm, rr = mpmath.matrix(m), mpmath.matrix(r)
    return list(mpmath.lu_solve(mm.T * mm + ridge * mpmath.eye(2), mm.T * rr))


def _ridge(m: list[list[float]], dtype=torch.float64):
    import mpmath

    info = torch.finfo(dtype)
    return mpmath.mpf(info.eps) * sum(mpmath.mpf(v) ** 2 for row in m for v in row) + mpmath.mpf(
        info.tiny
    )


def test_the_matched_solve_is_the_ridge_least_squares_solution():
    """_ridge_solve's contract: the minimiser of |m c - r|^2 + ridge |c|^2 with
    ridge = eps |m|_F^2 + tiny, checked against that minimiser in 60 digits:
    a well-conditioned m at a small scale (the ridge must stay at rounding
    level there), an ill-conditioned one (cond 1e6, where the ridge shows), the
    first-order pattern (c2's column zero) and a zero matrix."""
    from deu._neighbour import _ridge_solve

    cases = [
        ([[2e-4, 1e-4], [-1e-4, 3e-4]], [1e-4, 2e-4], 1e-12),
        ([[1.0, 1.0], [1.0, 1.0 + 1e-6]], [2.0, 2.0 + 3e-6], 1e-7),
        ([[1.0, 3.0], [0.5, 4.0]], [1.0, -2.0], 1e-13),
        ([[0.7, 0.0], [0.0, 0.0]], [0.35, 0.0], 1e-15),
    ]
    columns = [
        torch.tensor(v, dtype=torch.float64)
        for v in zip(*[m[0] + m[1] + r for m, r, _ in cases], strict=True)
    ]
    c1, c2 = _ridge_solve(*columns)
    for k, (m, r, rtol) in enumerate(cases):
        expected = [float(v) for v in _tikhonov(m, r, _ridge(m))]
        for got, want in zip((c1[k].item(), c2[k].item()), expected, strict=True):
            assert got == pytest.approx(want, rel=rtol, abs=1e-300), (k, m)
    # The ridge shows in the ill-conditioned case: the plain solve is (-1, 3).
    assert abs(c1[1].item() - -1.0) > 1e-3
    zero = torch.zeros(1, dtype=torch.float64)
    assert [v.item() for v in _ridge_solve(zero, zero, zero, zero, zero + 1.0, zero + 2.0)] == [
        0.0,
        0.0,
    ]


def test_matched_initial_conditions_that_do_not_exist_are_zero():
    """A target h(t*) = f that is NaN, or whose solve overflows to +-inf, gives
    c1 = c2 = 0 (the neighbour's homogeneous part off), not a NaN or inf that
    would reach the gradient; a finite one is matched."""
    from deu._generated import SUBSPACES

    from deu._neighbour import _evaluate_at, _matched_initial_conditions
    from deu._plan import Settings

    first_order = next(s for s in SUBSPACES if s.name == "a0_b_c")
    settings = Settings(
        dim=1,
        epsilon=0.01,
        steepness=1.0,
        max_exponent=4.0,
        max_value=1e12,
        gravitation="neighbour",
        critical="nearest",
    )
    coeffs = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0]] * 4, dtype=torch.float64)
    # At t* = 2, h = c1 e^-2 + (the particular part): c1 = (f - ...) e^2 overflows.
    t_star = torch.full((4,), 2.0, dtype=torch.float64)
    big = torch.finfo(torch.float64).max
    f = torch.tensor([float("nan"), big, -big, 0.5], dtype=torch.float64)
    solution = _matched_initial_conditions(
        first_order, coeffs, t_star, f, torch.zeros(4, dtype=torch.float64), settings
    )
    assert solution[:3].tolist() == [[0.0, 0.0]] * 3
    matched = coeffs[3:].clone()
    matched[:, 3:] = solution[3:]
    value, _ = _evaluate_at(first_order, matched, t_star[3:], settings)
    assert value.item() == pytest.approx(0.5, rel=1e-14) and solution[3, 1].item() == 0.0


# The capped function (derive/gravitation.py): where a mode's exponential is
# capped, y does not depend on that mode's rate, and z_p keeps only its amplitude
# terms. (coefficients, p, points t where some mode is capped at max_exponent=4.)
CAPPED_ORDER_KEEPING = [
    ((0.7, 0.0, -1.1, 0.2, 0.6), 1),  # hyperbolic, b: e^(+-1.25 t) capped for |t| > 3.2
    ((0.6, 0.9, 0.0, -0.3, 0.4), 2),  # ramp with transient, c: e^(-1.5 t) capped for t < -2.67
    ((-0.6, 0.9, 0.0, -0.3, 0.4), 2),  # a < 0: e^(1.5 t) capped for t > 2.67
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("coeffs", "p"), CAPPED_ORDER_KEEPING)
def test_derived_gravitation_is_the_derivative_of_the_capped_function(coeffs, p, backend):
    """Central differences across p = 0 of the layer's own values (the neighbouring
    subspaces' closed forms, each verified against the ODE, with epsilon tiny so
    that p = +-h is not zeroed): z_p is the derivative of what the layer computes,
    inside and outside the capped region."""
    values = torch.tensor(coeffs, dtype=torch.float64)
    t = torch.linspace(-6.0, 6.0, 241, dtype=torch.float64)
    z = per_point(t, values, backend, p, max_exponent=4.0, max_value=1e12)

    def layer(step: float) -> torch.Tensor:
        moved = values.clone()
        moved[p] = step
        c = moved.reshape(1, 5).expand(t.numel(), 5).contiguous()
        y = F.deu(t.reshape(1, -1), c, max_exponent=4.0, max_value=1e12, epsilon=1e-12)
        return y.reshape(-1)

    def central(h: float) -> torch.Tensor:
        return (layer(h) - layer(-h)) / (2 * h)

    # Richardson-extrapolated central differences with h = 1e-3: truncation
    # O(h^4) ~ 1e-12; rounding ~ 1e-16 * (1/h) / h ~ 1e-10 (the neighbour's
    # steady state 1/c cancels against its slow mode when c = +-h).
    difference = (4 * central(1e-3) - central(2e-3)) / 3
    # The kinks where a mode reaches the cap move by O(h) with p: points within
    # 1e-2 of a kink are left out (|rate| t = 4 for this subspace's rates).
    a, b = values[0].item(), values[1].item()
    rates = [abs(b / a)] if p == 2 else [math.sqrt(abs(values[2].item() / a))]
    away = torch.ones_like(t, dtype=torch.bool)
    for rate in rates:
        away &= ((t.abs() * rate - 4.0).abs() > 1e-2) & (t != 0)
    capped = away & (t.abs() * rates[0] > 4.0)
    assert capped.sum() > 20  # the check covers the capped region
    scale = difference.abs().max().item() + 1.0
    assert_close_per_element(z[away], difference[away], 1e-6, 1e-8 * scale, "capped z")


def _capped_first_order_outer_term_in_a(t, b, c, c1, cap):
    """The outer term above with its mode capped like the layer's,
    e^(clamp(-lam t, -60, cap)), and its secular terms (t e^{-lam t}, from the
    rate's shift -lam^2/b) only where the cap is inactive."""
    lam = c / b
    mode = torch.exp(torch.clamp(-lam * t, -60.0, cap))
    moving = ((-lam * t > -60.0) & (-lam * t < cap)).to(t.dtype)
    step = (t > 0).to(t.dtype)
    secular = -(c1 * lam**2 / b) * t * mode + step * lam**2 * t * mode / (b * c)
    return moving * secular - step * mode / b**2


@pytest.mark.parametrize("backend", BACKENDS)
def test_derived_gravitation_next_to_a_first_order_neuron_follows_the_cap(backend):
    t = torch.linspace(-3, 3, 121, dtype=torch.float64)
    for b, c, c1 in ((0.012, 2.5, 0.4), (0.3, 0.8, 0.3), (0.2, -0.6, -0.2), (-0.1, 0.5, 0.6)):
        coeffs = torch.tensor([0.0, b, c, c1, 0.0], dtype=torch.float64)
        z = per_point(t, coeffs, backend, 0, max_exponent=4.0)
        expected = _capped_first_order_outer_term_in_a(t, b, c, c1, 4.0)
        assert_close_per_element(z, expected, 1e-11, 1e-13, f"(b, c, c1) = {(b, c, c1)}")


def random_population(n: int, epsilon: float, seed: int) -> torch.Tensor:
    """a, b, c each of magnitude 0.1-3, exactly 0, or within 1.5 epsilon (either
    sign, a third each); c1, c2 uniform in [-0.5, 0.5]. Float64."""
    g = torch.Generator().manual_seed(seed)

    def magnitude() -> torch.Tensor:
        kind = torch.randint(0, 3, (n,), generator=g)
        large = torch.empty(n, dtype=torch.float64).uniform_(0.1, 3.0, generator=g)
        small = torch.empty(n, dtype=torch.float64).uniform_(0.0, 1.5 * epsilon, generator=g)
        sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
        return sign * torch.where(kind == 0, large, torch.where(kind == 1, 0.0, small))

    initial = torch.empty(n, 2, dtype=torch.float64).uniform_(-0.5, 0.5, generator=g)
    return torch.cat([torch.stack([magnitude() for _ in range(3)], 1), initial], 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_coefficient_gradient_is_absurd_over_a_random_population(backend):
    """|d mean(y) / d coefficient| below 1e6 for every neuron of the population and
    every coefficient (issue 17's bound), over standard-normal inputs, with the
    default settings. Before the capped gravitation term, first-order neurons
    with |b| near epsilon reached 1e8 in a."""
    coeffs = random_population(8000, 0.01, seed=3)
    x = torch.randn(
        256, coeffs.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(4)
    )
    c = coeffs.clone().requires_grad_()
    F.deu(x, c, backend=backend).mean(0).sum().backward()
    worst = c.grad.abs().max(0).values
    assert torch.isfinite(c.grad).all()
    assert (worst < 1e6).all(), f"largest |d mean(y)/d(a, b, c, c1, c2)|: {worst.tolist()}"


# One neuron per zero/sign pattern of (a, b, c), chosen by value (not from the
# generated tables), with c1 and c2 nonzero.
PATTERN_EXAMPLES = [
    (0.0, 0.0, 1.5),
    (0.0, 1.0, 0.0),
    (0.0, 0.8, 1.2),
    (1.0, 0.0, 0.0),
    (1.0, 0.0, 2.0),
    (1.0, 0.0, -2.0),
    (1.0, 0.5, 0.0),
    (1.0, 3.0, 1.0),
    (1.0, 2.0, 1.0),
    (1.0, 0.5, 2.0),
]


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("abc", PATTERN_EXAMPLES)
def test_each_rule_sums_the_derived_terms_only_where_it_uses_them(abc, backend):
    """In every subspace: without gravitation a coefficient that is zero gets a
    zero gradient; the derived rule gives it a gradient; the other coefficients
    get the same gradient under every rule (the backward's summed outputs)."""
    if backend == "cpp" and not _cpp.available():
        pytest.skip("the fused CPU kernel is not built here")
    x = torch.linspace(-2.0, 3.0, 41, dtype=torch.float64).reshape(-1, 1)
    coeffs = torch.tensor([[*abc, 0.3, -0.2]], dtype=torch.float64)
    g = torch.linspace(0.5, 1.5, 41, dtype=torch.float64).reshape(-1, 1)
    grads = {
        rule: gradient(x, coeffs, g, backend, gravitation=setting)[0]
        for rule, setting in (("off", False), ("derived", "derived"), ("neighbour", "neighbour"))
    }
    zero = [p for p in range(3) if abc[p] == 0.0]
    kept = [p for p in range(5) if p not in zero]
    assert all(grads["off"][p].item() == 0.0 for p in zero), grads["off"]
    assert all(grads["derived"][p].item() != 0.0 for p in zero), grads["derived"]
    # The ODE's order (2 with a, 1 with b alone, else 0) is how many of c1, c2 enter y.
    order = 2 if abc[0] else 1 if abc[1] else 0
    used = [p for p in kept if p < 3 or p - 3 < order]
    assert all(grads["off"][p].item() != 0.0 for p in used), grads["off"]
    for rule in ("derived", "neighbour"):
        assert torch.equal(grads[rule][kept], grads["off"][kept]), (rule, grads)
