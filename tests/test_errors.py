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
