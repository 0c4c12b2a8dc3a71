"""Numerical checks of the generated DEU kernels (``deu._generated``) against
independent references.

The property under test: in every subspace, ``value`` is the solution of

    a*y'' + b*y' + c*y = u(t),   u(t) = 1 for t > 0 and 0 for t <= 0,

with y(0) = c1, y'(0) = c2 (second order), y(0) = c1 (first order) or
y = sigmoid(s*t)/c (order 0), and ``derivatives`` returns the exact partial
derivatives of that solution.

The references never reuse a generated formula:

* the ODE reference is the state-space form x = [y, y'], x' = A x + B u,
  solved exactly with scipy's matrix exponential of the augmented matrix
  [[A, B], [0, 0]] * t (its upper-left block propagates the initial state, its
  last column is the zero-state step response, which is only switched on for
  t > 0);
* the derivative references are central finite differences, of the generated
  value (where that is the function being differentiated) or of the
  state-space solution (for the critically damped subspace, whose a/b/c
  derivatives are those of the true solution, not of its formula with
  c = b^2/(4a) eliminated).

Everything runs in float64 with fixed seeds, except the float32 test.  Sample
ranges keep every exponent below 12 in magnitude, and the kernels are
evaluated with the cap max_exponent = CAP = 14 (the paper's), so the cap is
never active except in the tests that are about the cap.
"""

import math

import deu._generated as g
import numpy as np
import pytest
import sympy as sp
import torch
from scipy.linalg import expm
from scipy.special import expit

from derive import rules, spec

SUBSPACES = {sub.name: sub for sub in g.SUBSPACES}
NAMES = list(SUBSPACES)
PARAMS = ("a", "b", "c", "c1", "c2")
# Index of each quantity in the 7-tuple returned by ``derivatives``.
OUT = {name: i for i, name in enumerate(g.OUTPUTS)}
DERIV_OF = {"t": "dy_dt", "a": "dy_da", "b": "dy_db", "c": "dy_dc", "c1": "dy_dc1", "c2": "dy_dc2"}

N_SETS = 10  # coefficient sets per subspace
N_T = 50  # t values per coefficient set
MAX_EXPONENT = 10.0  # |rate * t| stays below this (< 12 < CAP)
CAP = 14.0  # the kernels' max_exponent input in these tests
T_MAX = 6.0  # t range where no exponential limits it


def _seed(name, salt):
    # A fixed seed per (subspace, test) that does not depend on test order.
    return sum(ord(ch) * (i + 1) for i, ch in enumerate(name)) * 1000 + salt


# --------------------------------------------------------------------------
# Sampling coefficient sets that genuinely lie in a subspace
# --------------------------------------------------------------------------


def _magnitude(rng):
    """A nonzero coefficient: magnitude in [0.2, 3], random sign."""
    return rng.uniform(0.2, 3.0) * rng.choice([-1.0, 1.0])


def _sign_condition(sub):
    """The subspace's sign condition in derive/spec.py (a rule), and the terms
    of its left side in the coefficients (b*b and 4*a*c for b^2 - 4ac)."""
    sign = spec.by_name(sub.name).sign
    if sign is None:
        return None, []
    return sign, rules.terms(rules.substitute(sign.args[0], spec.QUANTITIES))


def _one_coefficient_set(sub, rng):
    """(a, b, c) satisfying the subspace's zero pattern and sign condition clearly."""
    sign, terms = _sign_condition(sub)
    while True:
        a, b, c = (0.0 if zero else _magnitude(rng) for zero in sub.zero)
        values = {"a": a, "b": b, "c": c}
        if sign is None:
            ok = True
        elif sign.op == "eq":
            # Exactly on the equation: the coefficient its relation solves for.
            ((p, expr),) = spec.by_name(sub.name).relation.items()
            values[p.name] = sp.lambdify(spec.CLASSIFIED, expr, "math")(a, b, c)
            a, b, c = values["a"], values["b"], values["c"]
            ok = 0.2 <= abs(values[p.name]) <= 3.0
        else:
            # Strict conditions are required with a margin (20% of the size of
            # the left side's terms) so that the samples are not near-degenerate.
            margin = 0.2 * sum(abs(spec.evaluate(term, **values)) for term in terms)
            side = spec.evaluate(sign.args[0], **values)
            ok = side > margin if sign.op == "gt" else -side > margin
        if ok:
            return a, b, c


def _rate(sub, a, b, c):
    """Largest |real part| of the ODE's characteristic roots (the exponents' rate)."""
    if sub.order == 0:
        return 0.0
    if sub.order == 1:
        return abs(c / b)
    return float(np.max(np.abs(np.roots([a, b, c]).real)))


def sample(sub, rng, n=N_SETS):
    """n coefficient sets of ``sub`` as float64 arrays, with a safe t half-range T."""
    rows = []
    for _ in range(n):
        a, b, c = _one_coefficient_set(sub, rng)
        c1, c2 = _magnitude(rng), _magnitude(rng)
        s = rng.uniform(0.5, 4.0)
        rate = _rate(sub, a, b, c)
        T = min(T_MAX, MAX_EXPONENT / rate) if rate > 0 else T_MAX
        rows.append((a, b, c, c1, c2, s, T))
    cols = np.array(rows).T
    return dict(zip(("a", "b", "c", "c1", "c2", "s", "T"), cols, strict=True))


def sample_t(rng, T, avoid_kink=False):
    """N_T values of t in [-T, T] for each coefficient set, shape (n, N_T)."""
    n = len(T)
    if avoid_kink:
        # |t| >= 1e-3: the finite differences in t must not straddle t = 0,
        # where y'' (first order: y') jumps.
        mag = rng.uniform(1e-3, 1.0, (n, N_T)) * T[:, None]
        mag = np.maximum(mag, 1e-3)
        mag[:, 0] = 1e-3
        return mag * rng.choice([-1.0, 1.0], (n, N_T))
    t = rng.uniform(-1.0, 1.0, (n, N_T)) * T[:, None]
    t[:, 0] = 0.0
    t[:, 1] = -T
    t[:, 2] = T
    t[:, 3] = 1e-9
    t[:, 4] = -1e-9
    return t


# --------------------------------------------------------------------------
# Evaluating the generated kernels
# --------------------------------------------------------------------------


def _col(x, dtype):
    return torch.as_tensor(np.asarray(x), dtype=dtype)[:, None]


def neuron(sub, coef, dtype=torch.float64, cap=CAP, **override):
    """Per-neuron quantities for coefficient arrays (neuron axis first, shape (n, 1))."""
    p = {**coef, **override}
    return sub.neuron(
        _col(p["a"], dtype),
        _col(p["b"], dtype),
        _col(p["c"], dtype),
        _col(p["c1"], dtype),
        _col(p["c2"], dtype),
        _col(p["s"], dtype),
        cap,
    )


def gen_value(sub, t, coef, dtype=torch.float64, cap=CAP, **override):
    k = neuron(sub, coef, dtype, cap, **override)
    return sub.value(torch.as_tensor(t, dtype=dtype), k).numpy()


def gen_derivatives(sub, t, coef, dtype=torch.float64, cap=CAP):
    """The 7 outputs as numpy arrays of t's shape; None stays None."""
    tt = torch.as_tensor(t, dtype=dtype)
    out = sub.derivatives(tt, neuron(sub, coef, dtype, cap))
    assert len(out) == len(g.OUTPUTS) == 7
    return [
        None if d is None else torch.broadcast_to(torch.as_tensor(d), tt.shape).numpy() for d in out
    ]


# --------------------------------------------------------------------------
# The independent reference: state-space solution by matrix exponential
# --------------------------------------------------------------------------


def reference(sub, t, a, b, c, c1, c2, s):
    """(y, y') of the ODE by expm, for coefficient arrays (n,) and t (n, m).

    Valid for any coefficients of the subspace's order (in particular for
    perturbed ones that leave the subspace), which is what the critical
    subspace's a/b/c derivatives need.
    """
    a, b, c, c1, c2, s = (np.asarray(x, dtype=float)[:, None] for x in (a, b, c, c1, c2, s))
    u = (t > 0).astype(float)
    if sub.order == 0:
        sig = expit(s * t)
        return sig / c, s * sig * (1 - sig) / c
    n, m = t.shape
    if sub.order == 1:
        # y' = (u - c y)/b: state y, augmented [[-c/b, 1/b], [0, 0]].
        M = np.zeros((n, m, 2, 2))
        M[..., 0, 0] = -c / b
        M[..., 0, 1] = 1 / b
        E = expm(M * t[..., None, None])
        y = E[..., 0, 0] * c1 + u * E[..., 0, 1]
        return y, (u - c * y) / b
    # x = [y, y'], A = [[0, 1], [-c/a, -b/a]], B = [0, 1/a].
    M = np.zeros((n, m, 3, 3))
    M[..., 0, 1] = 1.0
    M[..., 1, 0] = -c / a
    M[..., 1, 1] = -b / a
    M[..., 1, 2] = 1 / a
    E = expm(M * t[..., None, None])
    # Upper-left block: expm(A t) (homogeneous propagation, any sign of t);
    # last column: the zero-state step response, switched on only for t > 0.
    y = E[..., 0, 0] * c1 + E[..., 0, 1] * c2 + u * E[..., 0, 2]
    dy = E[..., 1, 0] * c1 + E[..., 1, 1] * c2 + u * E[..., 1, 2]
    return y, dy


def _scale(x):
    """Per coefficient set: max(1, max |x| over its t values), shape (n, 1)."""
    return np.maximum(1.0, np.max(np.abs(x), axis=1, keepdims=True))


def assert_close(actual, expected, rtol, what, scale=None):
    """|actual - expected| <= rtol * scale elementwise, scale per coefficient set."""
    scale = _scale(expected) if scale is None else scale
    err = np.abs(actual - expected) / scale
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    assert err[worst] <= rtol, (
        f"{what}: error {err[worst]:.3e} (relative to scale {scale[worst[0], 0]:.3g}) > {rtol:g} "
        f"at set {worst[0]}, got {actual[worst]!r}, expected {expected[worst]!r}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_samples_lie_in_their_subspace_and_cover_both_signs(name):
    """Guards the tests' strength: every sampled set satisfies the subspace's
    conditions, and each nonzero coefficient is sampled with both signs."""
    sub = SUBSPACES[name]
    coef = sample(sub, np.random.default_rng(_seed(name, 1)))
    a, b, c = coef["a"], coef["b"], coef["c"]
    for p, zero in zip("abc", sub.zero, strict=True):
        if zero:
            assert np.all(coef[p] == 0), f"{name}: {p} must be 0"
        else:
            assert np.all(np.abs(coef[p]) >= 0.2), f"{name}: {p} must be clearly nonzero"
            assert np.any(coef[p] > 0) and np.any(coef[p] < 0), f"{name}: {p} has one sign"
    sign, terms = _sign_condition(sub)
    if sign is None:
        condition = np.ones_like(a, dtype=bool)
    elif sign.op == "eq":  # on the equation up to rounding
        size = sum(np.abs(spec.evaluate(term, a=a, b=b, c=c)) for term in terms)
        condition = np.abs(spec.evaluate(sign.args[0], a=a, b=b, c=c)) <= 1e-14 * size
    else:
        condition = spec.evaluate(sign, a=a, b=b, c=c)
    assert np.all(condition), f"{name}: a sample violates {sub.sign}"
    for i in range(len(a)):
        # No exponent of the solution exceeds MAX_EXPONENT on [-T, T].
        assert _rate(sub, a[i], b[i], c[i]) * coef["T"][i] <= MAX_EXPONENT + 1e-12


# --------------------------------------------------------------------------
# 1. The value solves the ODE
# --------------------------------------------------------------------------

# Tolerance of the ODE comparison: both sides are float64 evaluations whose
# rounding errors are a modest multiple of eps ~ 2.2e-16 times the function's
# magnitude (at most e^10 times the data), so 1e-8 relative to the function's
# scale on that coefficient set leaves a wide margin while still catching any
# wrong term.  The error is measured relative to the scale, not pointwise:
# near a zero crossing y itself is tiny and a pointwise relative error says
# nothing about the accuracy of two canceling terms.
ODE_RTOL = 1e-8


@pytest.mark.parametrize("name", NAMES)
def test_every_subspace_solves_its_ode_numerically(name):
    sub = SUBSPACES[name]
    rng = np.random.default_rng(_seed(name, 1))
    coef = sample(sub, rng)
    t = sample_t(rng, coef["T"])
    y_ref, dy_ref = reference(sub, t, *(coef[p] for p in ("a", "b", "c", "c1", "c2", "s")))

    y = gen_value(sub, t, coef)
    assert_close(y, y_ref, ODE_RTOL, f"{name}: value vs state-space solution")

    outs = gen_derivatives(sub, t, coef)
    assert_close(outs[OUT["y"]], y_ref, ODE_RTOL, f"{name}: derivatives()[y] vs solution")
    assert outs[OUT["dy_dt"]] is not None, f"{name}: dy/dt is never identically zero"
    assert_close(outs[OUT["dy_dt"]], dy_ref, ODE_RTOL, f"{name}: dy/dt vs state-space y'")


def test_reference_is_the_ode_solution_for_a_textbook_case():
    """Guards the reference itself: y'' + 3y' + 2y = u with y(0)=1, y'(0)=0.

    Closed form for t > 0: 1/2 + e^{-t} - e^{-2t}/2; for t < 0: 2e^{-t} - e^{-2t}.
    """
    sub = SUBSPACES["a_b_c_disc_pos"]
    t = np.array([[-1.5, -0.3, 0.0, 0.4, 2.0]])
    one = np.ones(1)
    y, dy = reference(sub, t, one, 3 * one, 2 * one, one, 0 * one, one)
    pos = 0.5 + np.exp(-t) - 0.5 * np.exp(-2 * t)
    neg = 2 * np.exp(-t) - np.exp(-2 * t)
    np.testing.assert_allclose(y, np.where(t > 0, pos, neg), rtol=1e-13, atol=1e-13)
    dpos = -np.exp(-t) + np.exp(-2 * t)
    dneg = -2 * np.exp(-t) + 2 * np.exp(-2 * t)
    np.testing.assert_allclose(dy, np.where(t > 0, dpos, dneg), rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------
# 2. The derivatives are the partial derivatives
# --------------------------------------------------------------------------

# Central differences with h = 1e-6 * max(1, |p|): truncation error
# O(h^2 * y''') ~ 1e-12 times the third derivative's scale, rounding error
# ~ eps * |y| / h ~ 2e-10 * |y|.  Both are far below 1e-6 of the scale, which
# is max(1, |derivative|, |y|) on the coefficient set (|y| enters because the
# rounding error of the difference quotient is proportional to it).
FD_STEP = 1e-6
FD_RTOL = 1e-6
# The critical subspace's a/b/c derivatives are checked against differences of
# the expm solution: expm is accurate to ~1e-14 relative, so the step is larger
# (1e-5; rounding ~1e-9 of the scale).  Its truncation error O(h^2 * y''') was
# measured at <= 3e-7 of the scale (the third derivative in b is ~3e3 times the
# scale for t up to 6); the tolerance is 1e-5 relative to the scale.
CRIT_STEP = 1e-5
CRIT_RTOL = 1e-5


def _fd_scale(*arrays):
    return np.maximum.reduce([_scale(x) for x in arrays])


def _fd_params(sub):
    """The parameters whose derivative is defined in the subspace (nonzero ones)."""
    zero = dict(zip("abc", sub.zero, strict=True))
    return ["t"] + [p for p in PARAMS if not zero.get(p, False)]


def _fd_cases():
    return [(name, p) for name in NAMES for p in _fd_params(SUBSPACES[name])]


@pytest.mark.parametrize(("name", "param"), _fd_cases())
def test_every_derivative_matches_central_differences_of_the_value(name, param):
    sub = SUBSPACES[name]
    rng = np.random.default_rng(_seed(name, 2))
    coef = sample(sub, rng)
    t = sample_t(rng, coef["T"], avoid_kink=True)
    outs = gen_derivatives(sub, t, coef)
    y = outs[OUT["y"]]
    d = outs[OUT[DERIV_OF[param]]]

    if d is None:
        # "Identically zero": the value must not depend on the parameter at all,
        # even for a large perturbation.
        assert param in ("c1", "c2"), f"{name}: d/d{param} is None for a nonzero parameter"
        moved = gen_value(sub, t, coef, **{param: coef[param] + 0.37})
        np.testing.assert_array_equal(
            moved, y, err_msg=f"{name}: dy/d{param} is None but y depends on {param}"
        )
        return

    if param == "t":
        h = FD_STEP * np.maximum(1.0, np.abs(t))
        fd = (gen_value(sub, t + h, coef) - gen_value(sub, t - h, coef)) / (2 * h)
        rtol = FD_RTOL
    elif name == "a_b_c_disc_zero" and param in ("a", "b", "c"):
        # The derivative of the TRUE solution y(t; a, b, c): perturbing one
        # coefficient leaves the discriminant's zero, so difference the
        # state-space solution, which is valid everywhere.
        h = CRIT_STEP * np.maximum(1.0, np.abs(coef[param]))

        def ref_at(shift):
            p = {**coef, param: coef[param] + shift}
            return reference(sub, t, *(p[q] for q in ("a", "b", "c", "c1", "c2", "s")))[0]

        fd = (ref_at(h) - ref_at(-h)) / (2 * h[:, None])
        rtol = CRIT_RTOL
    else:
        h = FD_STEP * np.maximum(1.0, np.abs(coef[param]))
        up = gen_value(sub, t, coef, **{param: coef[param] + h})
        down = gen_value(sub, t, coef, **{param: coef[param] - h})
        fd = (up - down) / (2 * h[:, None])
        rtol = FD_RTOL

    assert_close(d, fd, rtol, f"{name}: dy/d{param} vs central differences", _fd_scale(d, y))


def test_critical_derivatives_match_differences_across_the_neighbouring_subspaces():
    """At b^2 = 4ac the a/b/c derivatives are the limits of the overdamped and the
    oscillating solutions' derivatives: a central difference whose two ends are
    evaluated with the disc > 0 and the disc < 0 kernels must reproduce them
    (this also checks that those kernels join continuously at the boundary).

    Step 1e-5 * max(1, |p|): the ends lie where |disc| ~ 1e-5, so the
    neighbouring kernels divide by nu ~ 1e-3 and lose a few digits (measured:
    they still agree with the expm solution to ~1e-9 of the scale there); the
    truncation error O(h^2 * y''') was measured at <= 3e-7 of the scale (the
    third b-derivative is large for t up to 6).  Tolerance 1e-5 of the scale.
    """
    crit = SUBSPACES["a_b_c_disc_zero"]
    pos, neg = SUBSPACES["a_b_c_disc_pos"], SUBSPACES["a_b_c_disc_neg"]
    rng = np.random.default_rng(_seed("critical-neighbours", 3))
    coef = sample(crit, rng)
    t = sample_t(rng, coef["T"], avoid_kink=True)
    outs = gen_derivatives(crit, t, coef)
    y = outs[OUT["y"]]
    a, b, c = coef["a"], coef["b"], coef["c"]
    # d(disc)/dp for disc = b^2 - 4ac: the sign of a shift's effect on disc.
    ddisc = {"a": -4 * c, "b": 2 * b, "c": -4 * a}
    for param in ("a", "b", "c"):
        h = CRIT_STEP * np.maximum(1.0, np.abs(coef[param]))
        ends = []
        for shift in (h, -h):
            moved = {**coef, param: coef[param] + shift}
            disc_positive = ddisc[param] * shift > 0  # per coefficient set
            vals = np.where(
                disc_positive[:, None],
                gen_value(pos, t, moved),
                gen_value(neg, t, moved),
            )
            ends.append(vals)
        fd = (ends[0] - ends[1]) / (2 * h[:, None])
        d = outs[OUT[DERIV_OF[param]]]
        assert_close(
            d, fd, CRIT_RTOL, f"critical dy/d{param} vs disc>0/disc<0 neighbours", _fd_scale(d, y)
        )


# --------------------------------------------------------------------------
# 3. float32
# --------------------------------------------------------------------------

# float32 has eps ~ 1.2e-7; the closed forms combine a handful of terms of up to
# e^10 times the data and may cancel by a factor of ~100, so 1e-4 relative to
# the function's scale is a loose but meaningful bound (a wrong term or a
# float64-only constant would be off by O(1)).  The float64 reference is
# evaluated at the float32-rounded inputs so that only arithmetic error counts.
F32_RTOL = 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_float32_evaluation_is_finite_and_close_to_float64(name):
    sub = SUBSPACES[name]
    rng = np.random.default_rng(_seed(name, 4))
    coef = sample(sub, rng)
    t = sample_t(rng, coef["T"])
    coef32 = {p: v.astype(np.float32).astype(np.float64) for p, v in coef.items()}
    t32 = t.astype(np.float32).astype(np.float64)

    y32 = gen_value(sub, t32, coef32, dtype=torch.float32)
    y64 = gen_value(sub, t32, coef32)
    assert y32.dtype == np.float32
    assert_close(y32.astype(np.float64), y64, F32_RTOL, f"{name}: float32 value")

    outs32 = gen_derivatives(sub, t32, coef32, dtype=torch.float32)
    outs64 = gen_derivatives(sub, t32, coef32)
    for out_name, d32, d64 in zip(g.OUTPUTS, outs32, outs64, strict=True):
        assert (d32 is None) == (d64 is None), f"{name}: {out_name} None in one dtype only"
        if d32 is None:
            continue
        assert d32.dtype == np.float32, f"{name}: {out_name} is not float32"
        assert_close(d32.astype(np.float64), d64, F32_RTOL, f"{name}: float32 {out_name}")


# --------------------------------------------------------------------------
# 4. The exponent cap
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cap", [14.0, 4.0, 2.0])
def test_exponent_cap_keeps_hyperbolic_growth_finite_and_bounded(cap):
    """a_b0_c_neg (y'' = kappa^2 y + 1/a): uncapped, e^{kappa t} overflows float64
    at kappa*t ~ 710.  With every exponential capped at e^cap, each of the terms
    c1*cosh, c2*sinh/kappa, (cosh - 1)/(a kappa^2) is at most e^cap times its
    coefficient, so |y| <= (|c1| + |c2|/kappa + 2/(|a| kappa^2)) * e^cap, and y is
    the same at any two t far beyond the cap."""
    sub = SUBSPACES["a_b0_c_neg"]
    a, c, c1, c2 = 0.5, -2.0, 1.5, -0.7
    kappa = math.sqrt(-c / a)
    coef = {k: np.array([v]) for k, v in dict(a=a, b=0.0, c=c, c1=c1, c2=c2, s=1.0).items()}
    t = np.array([[1e3, 1e4, 1e6, -1e3, -1e4, -1e6]])
    bound = (abs(c1) + abs(c2) / kappa + 2 / (abs(a) * kappa**2)) * math.exp(cap)

    y = gen_value(sub, t, coef, cap=cap)
    assert np.all(np.isfinite(y)), f"value overflowed at huge |t|: {y}"
    assert np.all(np.abs(y) <= bound), f"|y| exceeds the capped bound {bound:.6g}: {y}"
    # Saturated: beyond the cap, y no longer depends on t (the decaying mode
    # underflows to 0 exactly, the growing one is pinned at e^cap).
    np.testing.assert_array_equal(y[0, :3], y[0, 0])
    np.testing.assert_array_equal(y[0, 3:], y[0, 3])
    # And it is the capped value, not something clipped to 0: for t -> +inf,
    # y = (c1/2 + c2/(2 kappa) + 1/(2 a kappa^2)) e^cap - 1/(a kappa^2).
    expected = (c1 / 2 + c2 / (2 * kappa) + 1 / (2 * a * kappa**2)) * math.exp(cap) - 1 / (
        a * kappa**2
    )
    assert y[0, 0] == pytest.approx(expected, rel=1e-12)

    for out_name, d in zip(g.OUTPUTS, gen_derivatives(sub, t, coef, cap=cap), strict=True):
        if d is not None:
            assert np.all(np.isfinite(d)), f"{out_name} is not finite at huge |t|"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_every_subspace_stays_finite_at_huge_t(name, dtype):
    """Far outside any sensible range (|t| = 1e4, where uncapped exponentials
    would overflow in both precisions), value and derivatives are finite."""
    sub = SUBSPACES[name]
    rng = np.random.default_rng(_seed(name, 5))
    coef = sample(sub, rng)
    t = np.tile(np.array([-1e4, -300.0, 300.0, 1e4]), (N_SETS, 1))
    y = gen_value(sub, t, coef, dtype=dtype)
    assert np.all(np.isfinite(y)), f"{name}: value not finite at huge |t|"
    assert np.all(np.abs(y) < 1e30), f"{name}: value not bounded at huge |t|"
    for out_name, d in zip(g.OUTPUTS, gen_derivatives(sub, t, coef, dtype=dtype), strict=True):
        if d is not None:
            assert np.all(np.isfinite(d)), f"{name}: {out_name} not finite at huge |t|"
