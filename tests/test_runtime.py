"""The runtime layer: deu.DEU, deu.functional.deu, deu.subspaces."""

from __future__ import annotations

import math

import pytest
import torch
from deu._generated import SUBSPACES
from hypothesis import given, settings
from hypothesis import strategies as st

import deu
from derive import spec
from deu import functional as F
from deu._autograd import Settings, _evaluate_at, _matched_initial_conditions
from deu._subspaces import classify

EPS = 0.01
# The runtime settings the tests of the gravitation helpers evaluate with (the
# paper's cap of 14, as the expected values below assume).
SETTINGS = Settings(1, EPS, 100.0, 14.0, 1000.0, True, "nearest")
NAMES = [s.name for s in SUBSPACES]

# Coefficients well inside each subspace (a, b, c); c1, c2 are drawn per test.
INSIDE = {
    "a0_b0_c": (0.0, 0.0, 1.3),
    "a0_b_c0": (0.0, 0.8, 0.0),
    "a0_b_c": (0.0, -0.9, 0.6),
    "a_b0_c0": (0.7, 0.0, 0.0),
    "a_b0_c_pos": (-0.8, 0.0, -1.1),
    "a_b0_c_neg": (0.9, 0.0, -0.7),
    "a_b_c0": (-0.6, 0.9, 0.0),
    "a_b_c_disc_pos": (0.5, 1.7, 0.6),
    "a_b_c_disc_zero": (0.5, 1.2, 0.72),  # b^2 = 4ac exactly
    "a_b_c_disc_neg": (1.1, -0.4, 0.9),
}


def population(name: str, n: int = 3, seed: int = 0) -> torch.Tensor:
    """n neurons of one subspace in float64, with small perturbations of (a, b, c)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(INSIDE[name], dtype=torch.float64)
    abc = base * (1 + 0.05 * torch.rand(n, 3, generator=g, dtype=torch.float64))
    if name == "a_b_c_disc_zero":
        abc[:, 2] = abc[:, 1] ** 2 / (4 * abc[:, 0])
    ic = torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5
    return torch.cat([abc, ic], dim=1)


def test_inside_points_are_in_their_subspaces():
    for name in NAMES:
        assert set(deu.subspaces(population(name))) == {name}


def test_classification_agrees_with_the_generated_conditions():
    g = torch.Generator().manual_seed(1)
    coeffs = torch.randn(4000, 5, generator=g, dtype=torch.float64)
    coeffs[:, :3] *= (torch.rand(4000, 3, generator=g) < 0.7).double()  # many exact zeros
    effective, index = classify(coeffs, EPS)
    for (a, b, c, _, _), s in zip(effective.tolist(), index.tolist(), strict=True):
        sub = SUBSPACES[s]
        assert tuple(x == 0 for x in (a, b, c)) == sub.zero
        # derive/spec.py's sign condition, in floats: an equation up to rounding.
        sign = spec.by_name(sub.name).sign
        if sign is not None and sign.op == "eq":
            assert abs(spec.evaluate(sign.args[0], a=a, b=b, c=c)) < 1e-12, (sub.name, a, b, c)
        elif sign is not None:
            assert spec.evaluate(sign, a=a, b=b, c=c), (sub.name, a, b, c)
    assert set(index.tolist()) == set(range(10))


def test_presets_reproduce_the_activations_the_paper_names():
    # Built in float64: the symlog weights reproduce a preset's coefficients to
    # one rounding of the layer's dtype (1.0000000000000002 here; in float32 the
    # weight's own rounding gives 1 + 1.2e-7).
    f64 = torch.float64
    t = torch.linspace(-3, 3, 61, dtype=torch.float64).reshape(-1, 1)
    relu = deu.DEU(1, init="relu", dtype=f64)
    assert torch.allclose(relu(t), torch.relu(t), atol=0, rtol=1e-15)
    sigmoid = deu.DEU(1, init="sigmoid", steepness=2.0, dtype=f64)
    assert torch.allclose(sigmoid(t), torch.sigmoid(2.0 * t), rtol=1e-14)
    quadratic = deu.DEU(1, init="quadratic", dtype=f64)
    assert torch.allclose(quadratic(t), torch.relu(t) ** 2 / 2, rtol=1e-14)
    oscillator = deu.DEU(1, init="oscillator", dtype=f64)
    assert torch.allclose(oscillator(t), (t > 0) * (1 - torch.cos(t)), atol=1e-14)


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("name", [n for n in NAMES if n != "a_b_c_disc_zero"])
def test_gradcheck_in_every_subspace(name, backend):
    coeffs = population(name).requires_grad_()
    x = torch.linspace(-1.5, 1.5, 8, dtype=torch.float64).reshape(2, 1, 4).expand(2, 3, 4)
    x = (x + 0.01 * torch.arange(3, dtype=torch.float64).reshape(1, 3, 1)).clone().requires_grad_()
    # s = 3 keeps the sigmoid smooth on the finite-difference scale.
    fn = lambda x, c: F.deu(x, c, gravitation=False, steepness=3.0, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, coeffs), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_critical_damping_gradients_are_the_true_partial_derivatives():
    """dy/d(a, b, c) at b^2 = 4ac against central differences of the true solution.

    With epsilon = 1e-12 there is no band: the perturbed equations are solved by
    the overdamped and damped-oscillation kernels, independent of the critical one.
    """
    coeffs = population("a_b_c_disc_zero", n=1)
    x = torch.linspace(-1.0, 2.0, 13, dtype=torch.float64).reshape(-1, 1)
    c = coeffs.clone().requires_grad_()
    F.deu(x, c).sum().backward()
    h = 1e-6
    for j in range(3):
        up, down = coeffs.clone(), coeffs.clone()
        up[0, j] += h
        down[0, j] -= h
        numeric = (F.deu(x, up, epsilon=1e-12).sum() - F.deu(x, down, epsilon=1e-12).sum()) / (
            2 * h
        )
        # Truncation O(h^2) plus rounding ~1e-16/h: 1e-6 relative is ample.
        assert c.grad[0, j].item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-8), "abc"[j]


def test_critical_band_nearest_rule_is_continuous_and_paper_rule_is_not():
    # Critical at c = b^2/(4a) = 2; the paper's rule moves to a = c = 1 instead
    # (steady state 1/c: 1 instead of 0.5).
    a, b = 0.5, 2.0
    x = torch.linspace(0.0, 4.0, 41, dtype=torch.float64).reshape(-1, 1)

    def at(c: float, critical: str) -> torch.Tensor:
        coeffs = torch.tensor([[a, b, c, 0.0, 0.0]], dtype=torch.float64)
        return F.deu(x, coeffs, epsilon=0.04, critical=critical)

    inside, outside = 2.0 - 0.019, 2.0 - 0.021  # disc = 0.038 and 0.042: band edge at 0.04
    jump_nearest = (at(inside, "nearest") - at(outside, "nearest")).abs().max().item()
    jump_paper = (at(inside, "paper") - at(outside, "paper")).abs().max().item()
    assert jump_nearest < 0.02
    assert jump_paper > 5 * jump_nearest


def test_a_mixed_population_equals_each_neuron_alone():
    coeffs = torch.cat([population(n, n=2, seed=3) for n in NAMES]).requires_grad_()
    x = torch.randn(
        4, coeffs.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    x.requires_grad_()
    y = F.deu(x, coeffs)
    g = torch.randn_like(y)
    gx, gc = torch.autograd.grad(y, (x, coeffs), g)
    for i in range(coeffs.shape[0]):
        xi = x[:, i : i + 1].detach().requires_grad_()
        ci = coeffs[i : i + 1].detach().requires_grad_()
        yi = F.deu(xi, ci)
        gxi, gci = torch.autograd.grad(yi, (xi, ci), g[:, i : i + 1])
        assert torch.equal(yi, y[:, i : i + 1])
        assert torch.allclose(gxi, gx[:, i : i + 1], rtol=1e-14, atol=0)
        assert torch.allclose(gci, gc[i : i + 1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape,dim", [((5, 4), 1), ((2, 4, 3, 3), 1), ((3, 2, 4), -1), ((4,), 0)])
def test_any_neuron_axis_gives_the_same_result_as_the_neuron_axis_last(shape, dim):
    coeffs = torch.cat(
        [population(n, n=1) for n in ("a_b_c_disc_neg", "a0_b_c0", "a_b0_c_pos", "a0_b_c")]
    )
    x = torch.randn(shape, dtype=torch.float64)
    y = F.deu(x, coeffs, dim=dim)
    last = F.deu(x.movedim(dim, -1), coeffs, dim=-1)
    assert y.shape == x.shape
    assert torch.equal(y, last.movedim(-1, dim))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gravitation_gives_a_relu_neuron_gradients_in_a_and_c(dtype):
    coeffs = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    x = torch.randn(256, 1, generator=torch.Generator().manual_seed(0), dtype=dtype) + 0.5
    F.deu(x, coeffs, gravitation=True).pow(2).sum().backward()
    with_gravitation = coeffs.grad.clone()
    coeffs.grad = None
    F.deu(x, coeffs, gravitation=False).pow(2).sum().backward()
    without = coeffs.grad.clone()
    assert with_gravitation[0, 0] != 0 and with_gravitation[0, 2] != 0
    assert without[0, 0] == 0 and without[0, 2] == 0
    # The other gradients are f's own, unchanged by gravitation.
    assert torch.equal(with_gravitation[0, [1, 3, 4]], without[0, [1, 3, 4]])


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 2e-3), (torch.float64, 1e-8)])
def test_gravitation_gradient_is_the_gradient_of_the_matched_neighbour(dtype, rtol):
    """Rebuild the neighbour by hand (own 2x2 solve, ordinary autograd) and compare.

    ReLU with y(0) = 0.3; the neighbour in a is (eps, 1, 0, c1~, c2~), matched in
    value and slope at t* = mean input. Inputs near 0 keep the system well
    conditioned (its second column is exp(-t/eps) at t*).
    """
    gen = torch.Generator().manual_seed(2)
    x = (0.01 + 0.02 * torch.randn(64, 1, generator=gen)).to(dtype)
    g = torch.randn(64, 1, generator=gen).to(dtype)
    f = torch.tensor([[0.0, 1.0, 0.0, 0.3, 0.0]], dtype=dtype, requires_grad=True)
    F.deu(x, f, gravitation="neighbour", max_exponent=14.0).backward(g)
    gravitation_grad_a = f.grad[0, 0].item()

    t_star = x.mean().reshape(1, 1).detach()

    def value_and_slope(coeffs: torch.Tensor) -> tuple[float, float]:
        t = t_star.clone().requires_grad_()
        y = F.deu(t, coeffs, gravitation=False, max_exponent=14.0)
        (slope,) = torch.autograd.grad(y.sum(), t)
        return y.item(), slope.item()

    target = value_and_slope(f.detach())
    base = [EPS, 1.0, 0.0]
    h00, h10, h01 = (
        value_and_slope(torch.tensor([[*base, c1, c2]], dtype=torch.float64))
        for c1, c2 in ((0, 0), (1, 0), (0, 1))
    )
    m = torch.tensor(
        [[h10[0] - h00[0], h01[0] - h00[0]], [h10[1] - h00[1], h01[1] - h00[1]]],
        dtype=torch.float64,
    )
    rhs = torch.tensor([target[0] - h00[0], target[1] - h00[1]], dtype=torch.float64)
    c1, c2 = torch.linalg.solve(m.double(), rhs).tolist()
    h = torch.tensor([[*base, c1, c2]], dtype=dtype, requires_grad=True)
    F.deu(x, h, gravitation=False, max_exponent=14.0).backward(g)
    assert deu.subspaces(h) == ["a_b_c0"]
    assert gravitation_grad_a == pytest.approx(h.grad[0, 0].item(), rel=rtol)


@pytest.mark.parametrize(
    "coeffs,p",
    [
        ((0.0, 1.0, 0.0, 0.3, 0.0), 0),  # ReLU, neighbour in a: a_b_c0 (second order)
        ((1.0, 0.0, 2.0, 0.2, -0.4), 1),  # undamped oscillation, neighbour in b
        ((0.0, 0.0, 1.5, 0.0, 0.0), 0),  # sigmoid, neighbour in a
    ],
)
def test_the_gravitation_neighbour_matches_value_and_slope_at_t_star(coeffs, p):
    f_coeffs = torch.tensor([coeffs], dtype=torch.float64)
    effective, index = classify(f_coeffs, EPS)
    f_sub = SUBSPACES[index.item()]
    t_star = torch.tensor([0.4], dtype=torch.float64)
    f, df = _evaluate_at(f_sub, effective, t_star, SETTINGS)
    moved = effective.clone()
    moved[:, p] = EPS
    moved_eff, h_index = classify(moved, EPS)
    h_sub = SUBSPACES[h_index.item()]
    assert h_sub.order == 2
    ic = _matched_initial_conditions(h_sub, moved_eff, t_star, f, df, SETTINGS)
    moved_eff[:, 3:] = ic
    h, dh = _evaluate_at(h_sub, moved_eff, t_star, SETTINGS)
    assert h.item() == pytest.approx(f.item(), rel=1e-8, abs=1e-10)
    assert dh.item() == pytest.approx(df.item(), rel=1e-8, abs=1e-10)


def test_a_first_order_neighbour_matches_the_value():
    # Sigmoid neuron, singular in b: the neighbour (0, eps, c) is first order.
    f_coeffs = torch.tensor([[0.0, 0.0, 1.5, 0.0, 0.0]], dtype=torch.float64)
    effective, index = classify(f_coeffs, EPS)
    t_star = torch.tensor([0.02], dtype=torch.float64)
    f, df = _evaluate_at(SUBSPACES[index.item()], effective, t_star, SETTINGS)
    moved = effective.clone()
    moved[:, 1] = EPS
    moved_eff, h_index = classify(moved, EPS)
    h_sub = SUBSPACES[h_index.item()]
    assert h_sub.order == 1
    moved_eff[:, 3:] = _matched_initial_conditions(h_sub, moved_eff, t_star, f, df, SETTINGS)
    h, _ = _evaluate_at(h_sub, moved_eff, t_star, SETTINGS)
    assert h.item() == pytest.approx(f.item(), rel=1e-8)


_magnitudes = st.sampled_from([0.0, 1e-8, 1e-4, EPS, 0.0099999, 0.5, 1.0, 3.0, 1e2, 1e4])
_signs = st.sampled_from([-1.0, 1.0])
_coefficient = st.builds(lambda m, s: m * s, _magnitudes, _signs)


@settings(max_examples=150, deadline=None)
@given(
    abc=st.tuples(_coefficient, _coefficient, _coefficient),
    ic=st.tuples(st.floats(-10, 10), st.floats(-10, 10)),
    critical=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_outputs_and_gradients_are_finite_at_boundaries(abc, ic, critical, dtype):
    a, b, c = abc
    if critical and a != 0 and c != 0 and (a > 0) == (c > 0):
        b = math.copysign(math.sqrt(4 * a * c), b)  # discriminant exactly 0
    coeffs = torch.tensor([[a, b, c, *ic]], dtype=dtype, requires_grad=True)
    x = torch.linspace(-20, 20, 41, dtype=dtype).reshape(-1, 1).requires_grad_()
    y = F.deu(x, coeffs)
    y.sum().backward()
    assert torch.isfinite(y).all()
    assert y.abs().max() <= 1000.0
    assert torch.isfinite(x.grad).all(), (abc, ic)
    assert torch.isfinite(coeffs.grad).all(), (abc, ic)


def test_a_layer_with_no_neurons_maps_empty_to_empty():
    x = torch.randn(3, 0, requires_grad=True)
    coeffs = torch.zeros(0, 5, requires_grad=True)
    y = F.deu(x, coeffs)
    y.sum().backward()
    assert y.shape == (3, 0) and x.grad.shape == (3, 0) and coeffs.grad.shape == (0, 5)


def test_all_zero_coefficients_become_b_equals_epsilon():
    assert deu.subspaces(torch.zeros(1, 5)) == ["a0_b_c0"]
    x = torch.linspace(-1, 1, 5).reshape(-1, 1)
    y = F.deu(x, torch.zeros(1, 5))
    assert torch.allclose(y, torch.relu(x) / EPS)


def test_state_dict_round_trip_and_dtype_conversion():
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), deu.DEU(6))
    clone = torch.nn.Sequential(torch.nn.Linear(3, 6), deu.DEU(6, init="relu"))
    clone.load_state_dict(model.state_dict())
    x = torch.randn(4, 3)
    assert torch.equal(model(x), clone(x))
    assert set(model.state_dict()) == {"0.weight", "0.bias", "1.weight"}
    double = model.double()
    assert double[1].coeffs.dtype == torch.float64
    assert double(x.double()).dtype == torch.float64
    single = double.to(torch.float32)
    assert torch.allclose(single(x), clone(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_and_returned_in_its_dtype(dtype):
    layer = deu.DEU(4, init="damped")
    x = torch.randn(8, 4)
    y = layer(x.to(dtype))
    assert y.dtype == dtype
    assert torch.allclose(y.float(), layer(x.to(dtype).float()).to(dtype).float())
    y.float().sum().backward()
    assert torch.isfinite(layer.weight.grad).all()


def test_runs_under_cpu_autocast():
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), deu.DEU(4), torch.nn.Linear(4, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(torch.randn(16, 5))
    y.float().sum().backward()
    assert torch.isfinite(y.float()).all()
    assert torch.isfinite(model[1].weight.grad).all()


def test_nan_in_the_input_stays_in_its_own_elements():
    layer = deu.DEU(3)
    x = torch.randn(4, 3)
    x[1, 2] = float("nan")
    y = layer(x)
    assert torch.isnan(y[1, 2])
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[1, 2] = False
    assert torch.isfinite(y[mask]).all()


def test_torch_compile_runs_and_matches_eager():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), deu.DEU(8), torch.nn.Linear(8, 2))
    compiled = torch.compile(model)
    x = torch.randn(16, 4)
    assert torch.allclose(compiled(x), model(x), rtol=1e-5, atol=1e-6)
    compiled(x).sum().backward()
    compiled_grad = model[1].weight.grad.clone()
    model.zero_grad()
    model(x).sum().backward()
    assert torch.allclose(compiled_grad, model[1].weight.grad, rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    layer = deu.DEU(4)
    with pytest.raises(ValueError, match="input has 3 neurons along dim 1.*expected 4"):
        layer(torch.randn(2, 3))
    with pytest.raises(TypeError, match="floating-point.*torch.int64"):
        layer(torch.ones(2, 4, dtype=torch.long))
    bad = torch.zeros(4, 5)
    bad[1, 0], bad[3, 4] = float("inf"), float("nan")
    for backend in ("torch", "auto"):  # auto: the fused kernel checks them itself
        with pytest.raises(ValueError, match="neurons 1, 3 have non-finite"):
            F.deu(torch.randn(2, 4), bad, backend=backend)
    # Finite, but b^2 - 4ac is inf - inf = NaN in float32: no subspace takes it.
    huge = torch.tensor([[0.5, 1.7, 0.6, 0.1, 0.2], [1e20, 1e20, 1e20, 0.0, 0.0]])
    for backend in ("torch", "auto"):
        with pytest.raises(ValueError, match=r"neurons 1 fall in no subspace: in torch.float32"):
            F.deu(torch.randn(2, 2, 5), huge, backend=backend)
    with pytest.raises(ValueError, match="neurons 1 fall in no subspace"):
        deu.subspaces(huge)
    many = torch.full((12, 5), float("nan"))
    for backend in ("torch", "auto"):
        with pytest.raises(ValueError, match=r"neurons 0, 1, .*, 9, \.\.\. have non-finite"):
            F.deu(torch.randn(2, 12), many, backend=backend)
    with pytest.raises(ValueError, match=r"shape \(num_neurons, 5\), got \(4, 3\)"):
        F.deu(torch.randn(2, 4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="dim must be in"):
        F.deu(torch.randn(2, 4), torch.zeros(4, 5), dim=2)
    with pytest.raises(ValueError, match="critical must be one of"):
        F.deu(torch.randn(2, 4), torch.zeros(4, 5), critical="maple")
    with pytest.raises(ValueError, match="epsilon must be positive and finite, got 0.0"):
        F.deu(torch.randn(2, 4), torch.zeros(4, 5), epsilon=0.0)
    with pytest.raises(ValueError, match="max_value must be positive and finite, got inf"):
        F.deu(torch.randn(2, 4), torch.zeros(4, 5), max_value=float("inf"))
    with pytest.raises(ValueError, match="init must be one of"):
        deu.DEU(4, init="swish")
    with pytest.raises(ValueError, match=r"shape \(4, 5\), got \(3, 5\)"):
        deu.DEU(4, init=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="num_neurons must be a positive int"):
        deu.DEU(0)


def test_describe_and_repr():
    layer = deu.DEU(
        2, init=torch.tensor([[1.0687, 0.5607, 0.4251, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    )
    lines = layer.describe().splitlines()
    assert (
        lines[0]
        == "1.0687 y'' + 0.5607 y' + 0.4251 y = u(t)   y(0)=0, y'(0)=0   [damped (or growing) oscillation]"
    )
    assert lines[1] == "0.0000 y'' + 1.0000 y' + 0.0000 y = u(t)   y(0)=0   [ReLU-like ramp]"
    # The kernel's equation, not the stored one, where they differ: c moved onto
    # b^2 = 4ac in the critical band, a below epsilon zeroed.
    moved = deu.DEU(2, init=torch.tensor([[1.0, 2.0, 1.001, 0, 0], [0.005, 1.0, 1.0, 0, 0]]))
    critical, first_order = moved.describe().splitlines()
    assert critical.startswith("1.0000 y'' + 2.0000 y' + 1.0000 y = u(t)")
    assert critical.endswith("(stored a, b, c = 1, 2, 1.001)")
    assert first_order.startswith("0.0000 y'' + 1.0000 y' + 1.0000 y = u(t)")
    assert first_order.endswith("(stored a, b, c = 0.005, 1, 1)")
    assert repr(layer).startswith("DEU(2, dim=1, init='tensor', epsilon=0.01")
    assert layer.subspaces() == ["a_b_c_disc_neg", "a0_b_c0"]


def test_random_init_is_the_papers():
    layer = deu.DEU(1000, init="random")
    abc, ic = layer.coeffs[:, :3], layer.coeffs[:, 3:]
    assert (abc > 0).all() and (abc < 1).all()
    assert (ic == 0).all()


def test_a_two_layer_deu_network_learns_a_small_task():
    torch.manual_seed(0)
    x = torch.linspace(-3, 3, 128).reshape(-1, 1)
    target = torch.sin(2 * x) + 0.3 * x
    model = torch.nn.Sequential(
        torch.nn.Linear(1, 16),
        deu.DEU(16),
        torch.nn.Linear(16, 16),
        deu.DEU(16),
        torch.nn.Linear(16, 1),
    )
    # lr 3e-3: Adam's fixed-size steps on c1, c2 are amplified by the growing
    # homogeneous modes (up to exp(14)); at 1e-2 this task diverges (see README).
    # 600 steps: from the ReLU start the net is slower than a ReLU net early on
    # (loss 0.018 against ReLU's 0.0014 after 300 steps, Adam also moving every
    # neuron's slope 1/b) and level with it by 600 (7.1e-4 against 6.8e-4).
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    initial = torch.nn.functional.mse_loss(model(x), target).item()
    for _ in range(600):
        optimiser.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.02 * initial
    assert loss.item() < 0.005


def test_frozen_coefficients_or_input_get_no_gradient_and_the_other_is_unchanged():
    coeffs = torch.cat([population(n, n=1) for n in NAMES])
    x = torch.randn(6, len(NAMES), dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    full_x, full_c = x.clone().requires_grad_(), coeffs.clone().requires_grad_()
    F.deu(full_x, full_c).sum().backward()
    only_x = x.clone().requires_grad_()
    F.deu(only_x, coeffs).sum().backward()
    only_c = coeffs.clone().requires_grad_()
    F.deu(x, only_c).sum().backward()
    assert torch.equal(only_x.grad, full_x.grad)
    assert torch.equal(only_c.grad, full_c.grad)


def test_overdamped_small_root_is_accurate_in_float32():
    """Roots -99.98 and -0.02: the naive (-b + sqrt(disc))/(2a) loses the small one.

    The value must match float64 element by element to float32 rounding: 1e-5
    of itself, plus 4 float32 ulp of the steady state 1/c = 50 that it is
    computed from (at small t, y ~ 0.04 is 50 minus terms of nearly 50;
    measured: 1.7 ulp of 50 at most). The coefficient gradients still carry
    cancellation of exp(r2*t) - 1 (measured 5e-4 relative for dy/da), so they
    are held to 2e-3.
    """
    coeffs = torch.tensor([[0.01, 1.0, 0.02, 0.0, 0.0]], dtype=torch.float64)
    x = torch.linspace(0.05, 5, 100, dtype=torch.float64).reshape(-1, 1)
    results = {}
    for dtype in (torch.float32, torch.float64):
        c = coeffs.to(dtype).requires_grad_()
        y = F.deu(x.to(dtype), c)
        y.sum().backward()
        results[dtype] = (y.double(), c.grad.double())
    (y32, g32), (y64, g64) = results[torch.float32], results[torch.float64]
    ulp_of_50 = 2.0**-18  # float32 spacing in [32, 64)
    torch.testing.assert_close(y32, y64, rtol=1e-5, atol=4 * ulp_of_50)
    assert torch.allclose(g32, g64, rtol=2e-3, atol=1e-3)


def test_float32_neurons_at_the_critical_band_edge_stay_finite():
    """b^2 - 4ac just outside the band, at large magnitudes, in float32.

    The kernels take |b^2 - 4ac| as the classifier computes it; a kernel that
    computed omega^2 = c/a - alpha^2 got 0 here and returned NaN for the neuron.
    """
    known = torch.tensor([[-254.5601043701172, 1019.5485229492188, -1020.8583374023438, 3.3, -8.2]])
    gen = torch.Generator().manual_seed(5)
    n = 4000
    a = torch.empty(n, dtype=torch.float64).uniform_(1, 1e3, generator=gen)
    a *= torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    c = a * torch.empty(n, dtype=torch.float64).uniform_(0.5, 2, generator=gen)
    offset = EPS * torch.empty(n, dtype=torch.float64).uniform_(-3, 3, generator=gen)
    b = torch.sqrt(4 * a * c + offset) * torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    ic = torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5
    coeffs = torch.cat([known, torch.cat([torch.stack([a, b, c], 1), ic], 1).float()])
    assert {"a_b_c_disc_neg", "a_b_c_disc_pos", "a_b_c_disc_zero"} <= set(deu.subspaces(coeffs))
    coeffs.requires_grad_()
    x = torch.linspace(-1, 1, 5).reshape(-1, 1).expand(5, len(coeffs)).clone().requires_grad_()
    y = F.deu(x, coeffs)
    y.sum().backward()
    assert torch.isfinite(y).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(coeffs.grad).all()


@pytest.mark.parametrize(
    "coeffs",
    [(0.0, 1.0, 1.0, 1e-2, 0.0), (1.0, 0.0, -1.0, 0.2, 0.1), (1.0, 0.5, 0.02, 0.1, 0.3)],
)
@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("max_exponent", [14.0, 4.0])
def test_gradients_are_those_of_the_capped_function_where_the_cap_is_active(
    coeffs, backend, max_exponent
):
    """Inputs far enough out that exp's argument exceeds the cap: gradcheck still holds."""
    c = torch.tensor([coeffs], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[-20.0], [-17.5], [16.0], [19.0]], dtype=torch.float64, requires_grad=True)
    fn = lambda x, c: F.deu(  # noqa: E731
        x, c, gravitation=False, max_value=1e12, max_exponent=max_exponent, backend=backend
    )
    assert torch.autograd.gradcheck(fn, (x, c), eps=1e-6, atol=1e-5, rtol=1e-6)


def test_decayed_modes_give_no_subnormal_floats():
    """exp(-100) is subnormal in float32; such outputs slow every later operation."""
    coeffs = torch.tensor([[0.0, 1.0, -1.0, 1.0, 0.0], [1.0, 3.0, 1.0, 1.0, 0.0]])
    x = torch.linspace(-200, -80, 64).reshape(-1, 1).expand(64, 2).contiguous()
    y = F.deu(x, coeffs)
    tiny = torch.finfo(torch.float32).tiny
    assert ((y == 0) | (y.abs() >= tiny)).all(), y.abs().min()


# --------------------------------------------------------------------------
# The exponent cap (max_exponent), the paper's rules, deu.health
# --------------------------------------------------------------------------


def _capped_overdamped_homogeneous(t, a, b, c, c1, c2, cap):
    """y for t < 0 of an overdamped neuron, written out here: the modes
    e^{r1 t}, e^{r2 t} of a r^2 + b r + c = 0, each exponent clamped to cap."""
    disc = math.sqrt(b * b - 4 * a * c)
    r1, r2 = (-b - disc) / (2 * a), (-b + disc) / (2 * a)
    e1 = torch.exp(torch.clamp(r1 * t, max=cap))
    e2 = torch.exp(torch.clamp(r2 * t, max=cap))
    # y(0) = c1 and y'(0) = c2: A + B = c1, r1 A + r2 B = c2.
    big_a = (c2 - r2 * c1) / (r1 - r2)
    return big_a * e1 + (c1 - big_a) * e2


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("cap", [2.0, 4.0, 14.0])
def test_max_exponent_caps_each_homogeneous_mode(backend, cap):
    """a = 0.05, b = 0.8, c = 0.4: the fast mode grows like e^{15.5 |t|} for t < 0.
    Its exponent is clamped at max_exponent, mode by mode (an independent formula)."""
    a, b, c, c1, c2 = 0.05, 0.8, 0.4, 0.7, -0.3
    t = torch.linspace(-6.0, -0.01, 200, dtype=torch.float64).reshape(-1, 1)
    coeffs = torch.tensor([[a, b, c, c1, c2]], dtype=torch.float64)
    y = F.deu(t, coeffs, max_exponent=cap, max_value=1e12, backend=backend)
    expected = _capped_overdamped_homogeneous(t, a, b, c, c1, c2, cap)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    # The bound the cap promises: |y| <= (|A| + |B|) e^cap.
    assert y.abs().max() <= (abs(c1) + 2 * abs(c2) + 10) * math.exp(cap)


def test_max_exponent_bounds_the_coefficient_gradients_for_t_below_zero():
    """The issue's example: mean c1/c2 gradient of mean(y) over standard-normal
    inputs at a = 0.05, b = 0.8, c = 0.4 is ~1e4 with the paper's cap (14) and
    at most e^4 with the default (4)."""
    torch.manual_seed(0)
    x = torch.randn(4096, 1, dtype=torch.float64)
    grads = {}
    for cap in (14.0, 4.0):
        coeffs = torch.tensor([[0.05, 0.8, 0.4, 0.0, 0.0]], dtype=torch.float64)
        coeffs.requires_grad_()
        F.deu(x, coeffs, max_exponent=cap).mean().backward()
        grads[cap] = coeffs.grad[0, 3:].abs()
    assert (grads[14.0] > 1e3).all(), grads[14.0]
    assert (grads[4.0] <= math.exp(4.0)).all(), grads[4.0]


@pytest.mark.parametrize("bad", [0.0, -1.0, 80.5, float("nan"), float("inf")])
def test_max_exponent_out_of_range_is_a_clear_error(bad):
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"max_exponent must be in \(0, 80\], got"):
        F.deu(x, torch.zeros(2, 5) + 0.5, max_exponent=bad)
    with pytest.raises(ValueError, match="max_exponent must be in"):
        deu.DEU(2, max_exponent=bad)(x)


def test_paper_true_is_the_papers_cap_and_critical_rule_unless_overridden():
    default, paper = deu.DEU(3), deu.DEU(3, paper=True)
    assert (default.max_exponent, default.critical) == (F.DEFAULT_MAX_EXPONENT, "nearest")
    assert (paper.max_exponent, paper.critical) == (14.0, "paper")
    assert "paper=True" in repr(paper) and "max_exponent=14" in repr(paper)
    override = deu.DEU(3, paper=True, max_exponent=6.0, critical="nearest")
    assert (override.max_exponent, override.critical) == (6.0, "nearest")
    # The paper's model computes F.deu with exactly those settings.
    torch.manual_seed(1)
    x = 3 * torch.randn(64, 3, dtype=torch.float64)
    layer = deu.DEU(3, paper=True).double()
    expected = F.deu(x, layer.coeffs, max_exponent=14.0, critical="paper")
    assert torch.equal(layer(x), expected)


def test_health_reports_subspaces_movement_gradients_and_clamped_outputs():
    torch.manual_seed(0)
    layer = deu.DEU(3, init=torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]] * 2 + [[1.0, 0, 1, 0, 0]]))
    # The ramps exceed it for t >= 1.50, between grid points: the coefficients
    # are exact to rounding only (float32 symlog weights), so no point sits on it.
    layer.max_value = 1.495
    model = torch.nn.Sequential(torch.nn.Identity(), layer)
    x = torch.linspace(-3, 3, 601).reshape(-1, 1).expand(601, 3).contiguous()
    report = deu.health(model, x)
    assert len(report) == 1
    layer_report = report[0]
    assert layer_report.name == "1"
    assert layer_report.subspaces == {"a0_b_c0": 2, "a_b0_c_pos": 1}
    assert layer_report.grad_norm is None
    assert all(v == 0 for v in layer_report.moved.values())
    # Ramps at the clamp where t >= 1.50 (151 of the 601 points, 2 of 3 neurons);
    # the oscillator 1 - cos t exceeds 1.495 for t > 2.0886 (92 points). The
    # fraction is a float32 mean: 1e-6 relative.
    assert layer_report.clamped == pytest.approx((2 * 151 + 92) / (3 * 601), rel=1e-6)
    model(x).sum().backward()
    moved = layer.coeffs.detach().clone()
    moved[:, 3] += 0.25
    layer.coeffs = moved
    report = deu.health(model)
    assert report[0].clamped is None
    assert report[0].moved["c1"] == pytest.approx(0.25)
    assert report[0].moved["a"] == 0
    # The loss's gradient in the coefficients: weight's, divided by d coeffs / d weight
    # (symlog: scale + |p| for a, b, c; the scale for c1, c2).
    slope = torch.full_like(layer.weight, layer.coefficient_scale)
    slope[:, :3] += layer.coeffs.detach()[:, :3].abs()
    expected_norm = (layer.weight.grad / slope).norm(dim=0)
    for j, name in enumerate(("a", "b", "c", "c1", "c2")):
        assert report[0].grad_norm[name] == pytest.approx(expected_norm[j].item())
    assert "a0_b_c0 2" in str(report)


def test_health_finds_lazy_layers_and_says_when_there_are_none():
    model = deu.replace_activations(
        torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU()), init="relu"
    )
    model(torch.randn(5, 2))
    assert deu.health(model)[0].subspaces == {"a0_b_c0": 4}
    assert str(deu.health(torch.nn.Linear(2, 2))) == "no DEU layers"
    with pytest.raises(TypeError, match="model must be an nn.Module, got int"):
        deu.health(3)


def test_the_linear_coefficients_are_the_scale_times_the_learnable_weight():
    layer = deu.DEU(4, init="damped", parametrisation="linear")
    assert layer.coefficient_scale == 0.1 and deu.DEU(4, paper=True).coefficient_scale == 1.0
    assert deu.DEU(4, paper=True).parametrisation == "linear"
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    torch.testing.assert_close(layer.coeffs, 0.1 * layer.weight, rtol=0, atol=0)
    torch.testing.assert_close(layer.coeffs[0], torch.tensor([1.0, 1, 1, 0, 0]))
    # The gradient in weight is the scale times the gradient in the coefficients.
    x = torch.randn(16, 4, dtype=torch.float64)
    layer = layer.double()
    layer(x).square().sum().backward()
    coeffs = layer.coeffs.detach().clone().requires_grad_()
    F.deu(x, coeffs).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, 0.1 * coeffs.grad)
    # Assigning sets the coefficients; the state dict holds the weight.
    layer.coeffs = torch.full((4, 5), 0.5, dtype=torch.float64)
    assert torch.equal(layer.weight.detach(), torch.full((4, 5), 5.0, dtype=torch.float64))
    assert list(layer.state_dict()) == ["weight"]
    with pytest.raises(ValueError, match="coefficient_scale must be positive and finite, got 0"):
        deu.DEU(2, coefficient_scale=0)
    with pytest.raises(
        ValueError, match=r"parametrisation must be one of \('symlog', 'linear'\), got 'log'"
    ):
        deu.DEU(2, parametrisation="log")


def test_the_symlog_coefficients_of_the_weight():
    """a, b, c = s sign(w) (e^|w| - 1) and c1, c2 = s w (s = 0.1): values written
    out here, the slope at w = 0 from both sides (where ReLU-initialised a and c
    sit: a zero slope there would freeze them), d coeffs / d weight = s + |p|
    against autograd, the inverse, and assignment."""
    layer = deu.DEU(3, init="relu", dtype=torch.float64)
    assert layer.parametrisation == "symlog" and layer.coefficient_scale == 0.1
    torch.testing.assert_close(layer.coeffs[0], torch.tensor([0.0, 1, 0, 0, 0]).double())
    assert layer.weight[0, 1].item() == pytest.approx(math.log(11.0), rel=1e-15)
    weight = torch.tensor([[-2.0, -0.5, 0.0, 0.5, -3.0], [1.5, 3.0, -1e-9, 2.0, 0.25]]).double()
    layer = deu.DEU(2).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
    expected = weight.clone() * 0.1
    expected[:, :3] = 0.1 * torch.sign(weight[:, :3]) * torch.expm1(weight[:, :3].abs())
    torch.testing.assert_close(layer.coeffs, expected, rtol=1e-15, atol=0)
    # d coeffs / d weight, by autograd, at the weights above and at exactly 0.
    for w in (weight, torch.zeros(2, 5).double()):
        with torch.no_grad():
            layer.weight.copy_(w)
        layer.weight.grad = None
        layer.coeffs.sum().backward()
        slope = torch.full_like(w, 0.1)
        slope[:, :3] += layer.coeffs.detach()[:, :3].abs()
        torch.testing.assert_close(layer.weight.grad, slope, rtol=1e-14, atol=0)
    # The inverse: assigning coefficients gives them back.
    target = torch.tensor([[0.3, -2.5, 0.0, 0.7, -0.2], [-0.011, 1e-3, 40.0, 0.0, 1.0]]).double()
    layer.coeffs = target
    torch.testing.assert_close(layer.coeffs.detach(), target, rtol=1e-14, atol=1e-17)


def test_a_checkpoint_that_stored_the_coefficients_loads_into_the_weight():
    old = {"coeffs": torch.tensor([[0.2, 0.4, 0.6, 0.0, 1.0]])}
    layer = deu.DEU(1)
    layer.load_state_dict(old)
    torch.testing.assert_close(layer.coeffs.detach(), old["coeffs"])


@pytest.mark.parametrize("gravitation", ["derived", "neighbour"])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_a_1d_input_is_one_row_of_neurons(backend, gravitation):
    """(C,) with dim=0: each element is its own neuron, with the values and the
    per-neuron gradients of the same input as one row (1, C)."""
    coeffs = torch.tensor(
        [
            [0.0, 1.0, 0.0, 0.3, 0.0],
            [0.5, 1.7, 0.6, 0.1, 0.2],
            [0.7, 0.0, 1.6, 0.2, 0.6],
            [0.9, 0.0, 0.0, 0.3, -0.5],
            [0.0, 0.0, 1.5, 0.0, 0.0],
        ],
        dtype=torch.float64,
    )
    x = torch.tensor([0.3, -0.4, 1.1, 0.6, -0.2], dtype=torch.float64)
    results = []
    for inputs, dim in ((x, 0), (x.reshape(1, -1), 1)):
        xi = inputs.clone().requires_grad_()
        c = coeffs.clone().requires_grad_()
        y = F.deu(xi, c, dim=dim, gravitation=gravitation, backend=backend)
        y.backward(torch.linspace(0.5, 1.5, 5, dtype=torch.float64).reshape(inputs.shape))
        results.append((y.reshape(-1), xi.grad.reshape(-1), c.grad))
    for one_d, row in zip(*results, strict=True):
        assert torch.allclose(one_d, row, rtol=1e-14, atol=0), (one_d, row)
    assert (results[0][2][:, :3] != 0).sum() >= 10  # the coefficients' gradients are there


def test_classification_stays_on_the_coefficients_device():
    """No host round trip: on the meta device every result is a meta tensor."""
    coeffs = torch.tensor([[0.5, 1.7, 0.6, 0.1, 0.2], [0.0, 1.0, 0.0, 0.0, 0.0]]).to("meta")
    for critical in ("nearest", "paper"):
        effective, index = classify(coeffs, 0.01, critical)
        assert effective.device.type == "meta" and effective.shape == (2, 5)
        assert index.device.type == "meta" and index.dtype == torch.long and index.shape == (2,)


@pytest.mark.parametrize("x_grad", [True, False])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_a_layer_of_no_neurons_has_empty_gradients(backend, x_grad):
    x = torch.randn(3, 0, dtype=torch.float64, requires_grad=x_grad)
    coeffs = torch.zeros(0, 5, dtype=torch.float64, requires_grad=True)
    y = F.deu(x, coeffs, backend=backend)
    assert y.shape == (3, 0)
    y.backward(torch.ones_like(y))
    assert coeffs.grad.shape == (0, 5)
    assert (x.grad.shape == (3, 0)) if x_grad else x.grad is None


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_the_input_gradient_alone_equals_the_one_computed_with_the_coefficients(backend):
    """coeffs that need no gradient (frozen): the input's gradient is the same, in
    every neuron of a layer of several subspaces."""
    coeffs = torch.tensor(
        [
            [0.0, 1.0, 0.0, 0.3, 0.0],
            [0.5, 1.7, 0.6, 0.1, 0.2],
            [0.7, 0.0, 1.6, 0.2, 0.6],
            [0.9, 0.0, 0.0, 0.3, -0.5],
        ],
        dtype=torch.float64,
    )
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = []
    for frozen in (False, True):
        xi = x.clone().requires_grad_()
        c = coeffs.clone().requires_grad_(not frozen)
        F.deu(xi, c, backend=backend).sum().backward()
        grads.append(xi.grad)
    assert torch.equal(grads[0], grads[1])
    assert (grads[1] != 0).any(dim=0).all()  # every neuron has its gradient


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("need_input,need_coeffs", [(True, False), (False, True), (True, True)])
def test_the_backward_returns_only_the_gradients_asked_for(backend, need_input, need_coeffs):
    """The backward operator's body: an empty tensor in place of a gradient that is
    not needed, and the full gradient (the same as with both asked for) otherwise."""
    from deu._values import backward_values

    x = torch.randn(6, 4, dtype=torch.float64)
    coeffs = torch.tensor(
        [[0.0, 1.0, 0.5, 0.2, 0.0], [1.0, 0.3, 2.0, 0.1, -0.4]] * 2, dtype=torch.float64
    )
    g = torch.randn(6, 4, dtype=torch.float64)
    settings = Settings(1, 1e-3, 10.0, 4.0, 1e4, "derived", "nearest", backend)
    both = backward_values(x, coeffs, g, settings, True, True)
    grad_x, grad_coeffs = backward_values(x, coeffs, g, settings, need_input, need_coeffs)
    for got, full, needed in ((grad_x, both[0], need_input), (grad_coeffs, both[1], need_coeffs)):
        assert isinstance(got, torch.Tensor)
        if needed:
            assert torch.equal(got, full)
        else:
            assert got.shape == (0,), got.shape


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_the_backward_gives_gradients_in_the_layout_of_their_inputs(backend):
    """The operators' fake kernels promise gradients laid out as x and coeffs
    (torch.compile plans strides from them): a channels-last input and a
    transposed coefficient table get gradients with their strides, and the
    values of the contiguous case."""
    from deu._autograd import _backward_values

    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).to(memory_format=torch.channels_last)
    rows = [[1.0, 0.5, 2.0, 0.1, -0.2], [0.0, 1.0, 0.5, 0.2, 0.0], [0.0, 0.0, 1.5, 0.0, 0.0]]
    coeffs = torch.tensor(rows, dtype=torch.float64).T.contiguous().T
    assert not coeffs.is_contiguous() and not x.is_contiguous()
    g = torch.randn_like(x)
    settings = Settings(1, 1e-3, 10.0, 4.0, 1e4, "derived", "nearest", backend)
    grad_x, grad_coeffs = _backward_values(x, coeffs, g, settings, True, True)
    assert grad_x.stride() == x.stride() and grad_coeffs.stride() == coeffs.stride()
    dense = _backward_values(
        x.contiguous(), coeffs.contiguous(), g.contiguous(), settings, True, True
    )
    assert torch.equal(grad_x, dense[0]) and torch.equal(grad_coeffs, dense[1])
