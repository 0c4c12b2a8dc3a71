"""Errors at the boundary: each names what was expected and what it got."""

from __future__ import annotations

import pytest
import torch

import deu
from deu import _cpp
from deu import functional as F

SETTINGS = {"epsilon": 0.01, "critical": "nearest", "gravitation": True}
COEFFS = torch.tensor([[0.5, 1.7, 0.6, 0.1, 0.2], [0.0, 1.0, 0.0, 0.0, 0.0]])


def _x():
    return torch.randn(3, 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "call,error,message",
    [
        (
            lambda: F.deu(_x(), COEFFS.tolist(), **SETTINGS),
            TypeError,
            r"coeffs must be a torch\.Tensor, got list",
        ),
        (
            lambda: F.deu(_x(), 0.5, **SETTINGS),
            TypeError,
            r"coeffs must be a torch\.Tensor, got float",
        ),
        (
            lambda: F.deu(_x().tolist(), COEFFS, **SETTINGS),
            TypeError,
            r"input must be a torch\.Tensor, got list",
        ),
        (
            lambda: F.deu(_x(), COEFFS.long(), **SETTINGS),
            TypeError,
            r"coeffs must be a floating-point tensor, got dtype torch\.int64",
        ),
        (
            lambda: F.deu(_x(), COEFFS.int(), **SETTINGS),
            TypeError,
            r"coeffs must be a floating-point tensor, got dtype torch\.int32",
        ),
        (
            lambda: F.deu(torch.tensor(0.5), COEFFS[:1], **SETTINGS),
            ValueError,
            r"input must have at least one dimension \(the neuron axis\), got a 0-d tensor",
        ),
        (
            lambda: F.deu(_x(), COEFFS, steepness=0.0, **SETTINGS),
            ValueError,
            r"steepness must be positive and finite, got 0\.0",
        ),
        (
            lambda: F.deu(_x(), COEFFS, steepness=-3.0, **SETTINGS),
            ValueError,
            r"steepness must be positive and finite, got -3\.0",
        ),
        (
            lambda: F.deu(_x(), COEFFS.to("meta"), **SETTINGS),
            ValueError,
            r"coeffs must be on the input's device \(cpu\), got coeffs on meta",
        ),
        (
            lambda: F.deu(_x().to("meta"), COEFFS, **SETTINGS),
            ValueError,
            r"coeffs must be on the input's device \(meta\), got coeffs on cpu",
        ),
        (
            lambda: deu.DEU(2, init=COEFFS, **SETTINGS).to("meta")(_x()),
            ValueError,
            r"coeffs must be on the input's device \(cpu\), got coeffs on meta",
        ),
        (
            lambda: deu.DEU(2, steepness=0.0),
            ValueError,
            r"steepness must be positive and finite, got 0\.0",
        ),
        (
            lambda: deu.DEU(2, epsilon=float("inf")),
            ValueError,
            r"epsilon must be positive and finite, got inf",
        ),
        (
            lambda: deu.DEU(2, max_value=-1.0),
            ValueError,
            r"max_value must be positive and finite, got -1\.0",
        ),
        (
            lambda: deu.DEU(2, max_exponent=100.0),
            ValueError,
            r"max_exponent must be in \(0, 80\], got 100\.0",
        ),
        (
            lambda: deu.DEU(2, critical="maple"),
            ValueError,
            r"critical must be one of \('nearest', 'paper'\), got 'maple'",
        ),
    ],
    ids=[
        "list coeffs",
        "float coeffs",
        "list input",
        "int64 coeffs",
        "int32 coeffs",
        "0-d input",
        "steepness 0",
        "steepness < 0",
        "coeffs on meta",
        "input on meta",
        "module on meta",
        "layer steepness 0",
        "layer epsilon inf",
        "layer max_value < 0",
        "layer max_exponent > cap",
        "layer critical unknown",
    ],
)
def test_bad_arguments_raise_an_error_naming_the_expected_and_the_actual_value(
    call, error, message
):
    with pytest.raises(error, match=message):
        call()


def test_on_the_meta_device_shapes_come_through_forward_and_backward():
    x = _x().to("meta").requires_grad_()
    coeffs = COEFFS.to("meta").requires_grad_()
    y = F.deu(x, coeffs, **SETTINGS)
    y.sum().backward()
    assert y.shape == x.shape and y.device.type == "meta"
    assert x.grad.shape == x.shape and coeffs.grad.shape == coeffs.shape


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_double_backward_raises_a_clear_error(backend):
    if backend == "cpp" and not _cpp.available():
        pytest.skip("the fused CPU kernel could not be built here (see the warning)")
    x = _x().double().requires_grad_()
    coeffs = COEFFS.double().requires_grad_()
    y = F.deu(x, coeffs, backend=backend, **SETTINGS)
    # A first derivative with create_graph works; differentiating it again does not.
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    assert gx.requires_grad
    with pytest.raises(RuntimeError, match="differentiable once; a second derivative"):
        gx.sum().backward()


def _backends():
    return ["torch", "cpp"] if _cpp.available() else ["torch"]


@pytest.mark.parametrize(
    "count,shown", [(10, "0, 1, 2, 3, 4, 5, 6, 7, 8, 9"), (11, "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...")]
)
def test_unclassified_neurons_are_named_up_to_ten(count, shown):
    # b^2 - 4ac = inf - inf in float32: no subspace takes these neurons.
    huge = torch.tensor([[1e20, 1e20, 1e20, 0.0, 0.0]] * count)
    for backend in _backends():
        with pytest.raises(ValueError) as error:
            F.deu(torch.randn(2, count), huge, backend=backend)
        assert str(error.value).startswith(
            f"coeffs of neurons {shown} fall in no subspace: in torch.float32, b^2 - 4ac is "
            "NaN or a*c rounds to zero (neuron 0: a, b, c = 1e+20, 1e+20, 1e+20); rescale them"
        ), backend


@pytest.mark.parametrize(
    "rows,named,first",
    [
        # The whole layer is one singular group; the first bad neuron is shown.
        ([[1e-20, 0.0, 0.0, 0.1, 0.2], [2e-20, 0.0, 0.0, 0.1, 0.2]], "0, 1", "1e-20"),
        ([[2e-20, 0.0, 0.0, 0.1, 0.2], [1e-20, 0.0, 0.0, 0.1, 0.2]], "0, 1", "2e-20"),
        # Among other neurons: named by their place in the layer.
        (
            [[0.5, 1.7, 0.6, 0.1, 0.2], [3e-20, 0.0, 0.0, 0.1, 0.2]] * 2,
            "1, 3",
            "3e-20",
        ),
    ],
)
def test_a_neighbour_in_no_subspace_names_the_neurons_and_the_first_ones_coefficients(
    rows, named, first
):
    # a_b0_c0 neurons whose c moved to epsilon = 1e-30: a*c is 0 in float32.
    coeffs = torch.tensor(rows)
    for backend in _backends():
        x = torch.randn(4, len(rows), requires_grad=True)
        c = coeffs.clone().requires_grad_()
        y = F.deu(x, c, epsilon=1e-30, gravitation="neighbour", backend=backend)
        with pytest.raises(ValueError) as error:
            y.sum().backward()
        assert str(error.value).startswith(
            f"coeffs of neurons {named} have a gravitation neighbour (c moved to +-epsilon) "
            f"that falls in no subspace: in torch.float32, b^2 - 4ac is NaN or a*c rounds to "
            f"zero (neuron {named.split(',')[0]}: a, b, c = {first}, 0, 0)"
        ), (backend, str(error.value))


@pytest.mark.parametrize("shape", [(4, 3), (5,), (2, 5, 1)])
def test_subspaces_of_coefficients_of_the_wrong_shape_is_a_clear_error(shape):
    with pytest.raises(ValueError) as error:
        deu.subspaces(torch.zeros(shape))
    assert str(error.value) == f"coeffs must have shape (num_neurons, 5), got {shape}"


def test_the_double_backward_error_says_what_is_not_supported():
    x = _x().double().requires_grad_()
    y = F.deu(x, COEFFS.double().requires_grad_(), backend="torch", **SETTINGS)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError) as error:
        gx.sum().backward()
    assert str(error.value) == (
        "deu: the activation is differentiable once; a second derivative (backward "
        "through its gradient, e.g. after autograd.grad(..., create_graph=True)) is "
        "not supported"
    )


@pytest.mark.parametrize(
    "count,shown", [(10, "0, 1, 2, 3, 4, 5, 6, 7, 8, 9"), (11, "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...")]
)
def test_non_finite_coefficients_are_named_up_to_ten(count, shown):
    bad = torch.full((count, 5), float("nan"))
    for backend in _backends():
        with pytest.raises(ValueError) as error:
            F.deu(torch.randn(2, count), bad, backend=backend)
        assert str(error.value) == (
            f"coeffs must be finite; neurons {shown} have non-finite coefficients"
        ), backend


def test_only_the_unclassified_neurons_are_named_beside_the_first_subspace():
    # Neuron 0 is in subspace 0 (a0_b0_c, the sigmoid); neuron 1 in none.
    coeffs = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0], [1e20, 1e20, 1e20, 0.0, 0.0]])
    for backend in _backends():
        with pytest.raises(ValueError) as error:
            F.deu(torch.randn(2, 2), coeffs, backend=backend)
        assert str(error.value).startswith("coeffs of neurons 1 fall in no subspace"), backend


def test_a_graph_traced_with_the_fused_kernel_says_so_where_it_cannot_be_built(monkeypatch):
    # As if exported where the kernel built and run where it does not.
    monkeypatch.setattr(_cpp, "_state", {"extension": None})
    with pytest.raises(RuntimeError) as error:
        torch.ops.deu.forward(_x(), COEFFS, 1, 0.01, 1.0, 4.0, 1e6, "derived", "nearest", "cpp")
    assert str(error.value) == (
        "deu: this call was traced with backend 'cpp', but the fused CPU kernel cannot be "
        "built here (see the warning above); trace it with backend='torch'"
    )


def test_classify_names_the_critical_rules():
    from deu._subspaces import classify

    with pytest.raises(ValueError) as error:
        classify(COEFFS, 0.01, "maple")
    assert str(error.value) == "critical must be one of ('nearest', 'paper'), got 'maple'"
