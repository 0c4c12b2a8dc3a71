"""The eager fast path of deu.DEU and deu.functional.deu on the fused CPU kernel.

An eager CPU call skips the custom operator's dispatch and computes the layer's
parametrisation and activation in one autograd node (deu._autograd.layer_apply,
deu/csrc/parametrisation.h). It must give the general path's values and
gradients bit for bit, and every case it does not handle must take the general
path.
"""

from __future__ import annotations

import copy
import itertools
import pickle

import pytest
import torch

import deu
import deu._autograd as A
import deu._parametrisation as P
from deu import _cpp
from deu import functional as F

pytestmark = pytest.mark.skipif(
    not _cpp.available(), reason="the fused CPU kernel could not be built here"
)

SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3, 0.7, -0.7, 3.0, -3.0, 40.0, -40.0]


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Equal bit for bit: values (NaN where NaN) and the sign of every zero."""
    if a is None or b is None:
        return a is None and b is None
    return (
        a.dtype == b.dtype
        and torch.equal(torch.isnan(a), torch.isnan(b))
        and torch.equal(a.nan_to_num(), b.nan_to_num())
        and torch.equal(torch.signbit(a), torch.signbit(b))
    )


def _general(monkeypatch) -> None:
    """Force the general path: the traced parametrisation and the custom operator."""
    monkeypatch.setattr(deu.DEU, "_eager_call", lambda self, input: None)
    monkeypatch.setattr(A, "_eager", lambda x, coeffs: False)


def _mixed_layer(weight_dtype, parametrisation, **settings) -> deu.DEU:
    """A layer with neurons in every kind of subspace, singular ones included."""
    torch.manual_seed(3)
    layer = deu.DEU(40, init="random", parametrisation=parametrisation, **settings)
    with torch.no_grad():
        c = layer.coeffs.clone()
        c[::4, 0] = 0.0  # a = 0
        c[1::5, 2] = 0.0  # c = 0
        c[2::6, 1] = 0.0  # b = 0
        c[3::7, :3] = torch.tensor([1.0, 2.0, 1.0])  # b^2 = 4ac
        c[5::9, 0] = -1e-3  # inside the epsilon ball
        c[6::9, :3] = torch.tensor([-0.8, 0.3, 2.5])  # a < 0: growing modes, capped
        c[:, 3:] = torch.randn(40, 2) * 0.3
        layer.coeffs = c
    return layer.to(weight_dtype)


def _run(layer, x, mode):
    layer.weight.grad = None
    layer.weight.requires_grad_(mode in ("both", "weight"))
    x = x.detach().clone().requires_grad_(mode in ("both", "input"))
    if mode == "none":
        with torch.no_grad():
            return (layer(x),)
    y = layer(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y).to(y.dtype)).sum().backward()
    return y.detach(), x.grad, layer.weight.grad


CASES = list(
    itertools.product(
        [torch.float32, torch.float64],  # weight dtype
        [torch.float32, torch.float64],  # input dtype
        [True, False, "neighbour"],
        ["nearest", "paper"],
        ["symlog", "linear"],
    )
)


@pytest.mark.parametrize("weight_dtype,input_dtype,gravitation,critical,parametrisation", CASES)
def test_the_layer_eager_path_is_bit_identical_to_the_general_path(
    monkeypatch, weight_dtype, input_dtype, gravitation, critical, parametrisation
):
    layer = _mixed_layer(weight_dtype, parametrisation, gravitation=gravitation, critical=critical)
    x = torch.randn(6, 40, 3, dtype=input_dtype, generator=torch.Generator().manual_seed(1)) * 3
    eager = {mode: _run(layer, x, mode) for mode in ("both", "input", "weight", "none")}
    with monkeypatch.context() as patch:
        _general(patch)
        general = {mode: _run(layer, x, mode) for mode in ("both", "input", "weight", "none")}
    for mode in eager:
        for got, want in zip(eager[mode], general[mode], strict=True):
            assert _same(got, want), (mode, got, want)


def test_a_plain_cpu_call_takes_the_eager_path_and_a_half_precision_one_does_not():
    layer = deu.DEU(8)
    x = torch.randn(4, 8, requires_grad=True)
    assert type(layer(x).grad_fn).__name__ == "_EagerLayerBackward"
    assert type(F.deu(x, layer.coeffs).grad_fn).__name__ == "_EagerDEUBackward"
    # float16 is computed in float32 by the general path, which casts it.
    assert type(layer(x.half()).grad_fn).__name__ != "_EagerLayerBackward"
    assert type(deu.DEU(8, backend="torch")(x).grad_fn).__name__ != "_EagerLayerBackward"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 7, 33])
def test_the_extension_parametrisation_matches_the_traced_form(dtype, rows):
    torch.manual_seed(rows)
    values = torch.tensor(SPECIAL + [float("nan"), float("inf"), -float("inf")], dtype=dtype)
    weight = values[torch.randint(len(values), (rows, 5))].clone()
    weight[:, :3] += torch.randn(rows, 3, dtype=dtype) * (torch.rand(rows, 3) < 0.3)
    grad = torch.randn(rows, 5, dtype=dtype)

    traced_w = weight.clone().requires_grad_()
    traced = P.coefficients_from_weight(traced_w, 0.1, "symlog")
    traced.backward(grad)

    coeffs, saved = _cpp.extension().parametrise(weight, 0.1, True)
    assert _same(coeffs, traced.detach())
    grad_weight = _cpp.extension().parametrise_backward(grad, saved, 0.1)
    # At a NaN weight the traced form's clamp masks the gradient; the extension
    # gives NaN (a layer with a NaN weight raises before any backward).
    finite = ~torch.isnan(weight)
    assert _same(grad_weight[finite], traced_w.grad[finite])
    assert torch.isnan(grad_weight[~finite & (torch.arange(5) < 3)]).all()
    linear, nothing = _cpp.extension().parametrise(weight, 0.1, False)
    assert nothing is None and _same(linear, weight * 0.1)
    assert _same(_cpp.extension().parametrise_backward(grad, None, 0.1), grad * 0.1)


def test_the_extension_refuses_a_weight_of_the_wrong_shape():
    with pytest.raises(RuntimeError, match=r"expects a \(neurons, 3 \+ initial conditions\)"):
        _cpp.extension().parametrise(torch.zeros(4, 3), 0.1, True)


def test_the_eager_path_reports_a_double_backward_as_the_operator_does():
    layer = deu.DEU(3).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
    assert gx.requires_grad
    with pytest.raises(RuntimeError, match="differentiable once; a second derivative"):
        gx.sum().backward()


def test_a_double_backward_through_the_weight_gradient_alone_is_the_same_error():
    layer = deu.DEU(3, init="random").double()
    x = torch.randn(4, 3, dtype=torch.float64)  # no input gradient: the weight's alone
    (gw,) = torch.autograd.grad(layer(x).sum(), layer.weight, create_graph=True)
    assert gw.requires_grad
    with pytest.raises(RuntimeError, match="differentiable once; a second derivative"):
        gw.sum().backward()


def test_gradcheck_through_the_eager_layer():
    layer = _mixed_layer(torch.float64, "symlog")
    x = torch.randn(3, 40, dtype=torch.float64, requires_grad=True)
    # Away from the subspace boundaries the layer is smooth in its input.
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))


def test_changing_a_setting_after_a_call_takes_effect_and_is_checked():
    layer = deu.DEU(4, init="random")
    x = torch.randn(5, 4)
    before = layer(x)
    layer.max_value = 1e-3
    assert layer(x).abs().max() <= 1e-3 < before.abs().max()
    layer.epsilon = -1.0
    with pytest.raises(ValueError, match="epsilon must be positive and finite, got -1.0"):
        layer(x)


def test_a_copied_or_pickled_layer_computes_the_same_and_does_not_carry_the_cache():
    layer = deu.DEU(4, init="random")
    x = torch.randn(5, 4)
    y = layer(x)
    assert "_settings_cache" in layer.__dict__
    restored = pickle.loads(pickle.dumps(layer))
    assert "_settings_cache" not in restored.__dict__
    assert "_settings_cache" in layer.__dict__  # pickling did not empty the original
    assert torch.equal(restored(x), y) and torch.equal(copy.deepcopy(layer)(x), y)


def test_diverged_coefficients_on_the_eager_path_say_so():
    layer = deu.DEU(3)
    with torch.no_grad():
        layer.weight[1, 0] = float("nan")
    with pytest.raises(deu.CoefficientsDiverged, match="diverged during training"):
        layer(torch.randn(2, 3))


def test_under_autocast_the_layer_takes_the_general_path_with_the_same_result(monkeypatch):
    layer = deu.DEU(6, init="random")
    x = torch.randn(3, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert type(y.grad_fn).__name__ != "_EagerLayerBackward"
    assert torch.equal(y, layer(x))


def test_torch_jit_trace_records_the_operator_not_the_eager_path():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), deu.DEU(3, init="random"))
    x = torch.randn(5, 4)
    with pytest.warns(torch.jit.TracerWarning):  # the shape checks become constants
        traced = torch.jit.trace(model, x, check_trace=False)
    graph = str(traced._modules["1"].graph)
    assert "deu::forward" in graph and "_EagerLayer" not in graph
    x2 = torch.randn(5, 4)
    assert torch.equal(traced(x2), model(x2))
