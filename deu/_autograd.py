"""The DEU activation as a PyTorch custom operator, with its autograd.

The values and gradients are ``deu._values``'s; this module registers the
operators, their fake kernels and the autograd formula.
"""

from __future__ import annotations

import torch

# Settings and the neighbour rule's helpers stay importable from here (tests).
from deu._neighbour import _evaluate_at, _matched_initial_conditions  # noqa: F401
from deu._plan import Settings
from deu._values import backward_values, forward_values


def _in_layout_of(result: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """result with reference's memory layout, as the operators' fake kernels promise.

    torch.compile plans strides from the fake kernels (torch.empty_like of the
    input): a channels-last or permuted input must get an output laid out alike.
    """
    if result.stride() == reference.stride():
        # The kernels' results are dense, so the reference is dense too, and
        # empty_like keeps a dense tensor's strides: nothing to allocate.
        return result
    target = torch.empty_like(reference)
    if result.stride() == target.stride():
        return result
    return target.copy_(result)


def _check_finite(coeffs: torch.Tensor) -> None:
    finite = torch.isfinite(coeffs).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(f"coeffs must be finite; neurons {shown} have non-finite coefficients")


# The activation as a PyTorch custom operator: torch.compile and torch.export see
# one opaque op with a known output shape (no graph break at the host
# synchronisation that reads the subspace groups), and autograd is registered on it.


@torch.library.custom_op("deu::forward", mutates_args=())
def deu_forward(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    dim: int,
    epsilon: float,
    steepness: float,
    max_exponent: float,
    max_value: float,
    gravitation: str,
    critical: str,
    backend: str,
) -> torch.Tensor:
    if backend != "cpp":  # the fused kernel checks them itself, in one pass
        _check_finite(coeffs)
    settings = Settings(
        dim, epsilon, steepness, max_exponent, max_value, gravitation, critical, backend
    )
    return _in_layout_of(forward_values(x, coeffs, settings), x)


@deu_forward.register_fake
def _(x, coeffs, dim, epsilon, steepness, max_exponent, max_value, gravitation, critical, backend):
    return torch.empty_like(x)


@torch.library.custom_op("deu::backward", mutates_args=())
def deu_backward(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    grad_output: torch.Tensor,
    dim: int,
    epsilon: float,
    steepness: float,
    max_exponent: float,
    max_value: float,
    gravitation: str,
    critical: str,
    backend: str,
    need_input: bool,
    need_coeffs: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    settings = Settings(
        dim, epsilon, steepness, max_exponent, max_value, gravitation, critical, backend
    )
    grad_x, grad_coeffs = backward_values(
        x, coeffs, grad_output.contiguous(), settings, need_input, need_coeffs
    )
    return (
        _in_layout_of(grad_x, x) if need_input else grad_x,
        _in_layout_of(grad_coeffs, coeffs) if need_coeffs else grad_coeffs,
    )


@deu_backward.register_fake
def _(
    x,
    coeffs,
    grad_output,
    dim,
    epsilon,
    steepness,
    max_exponent,
    max_value,
    gravitation,
    critical,
    backend,
    need_input,
    need_coeffs,
):
    nothing = x.new_empty(0)
    return (
        torch.empty_like(x) if need_input else nothing,
        torch.empty_like(coeffs) if need_coeffs else nothing,
    )


def _setup_context(ctx, inputs, output) -> None:
    x, coeffs, *settings = inputs
    ctx.save_for_backward(x, coeffs)
    ctx.settings = settings


def _backward(ctx, grad_output):
    x, coeffs = ctx.saved_tensors
    need_input, need_coeffs = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_x, grad_coeffs = deu_backward(
        x, coeffs, grad_output, *ctx.settings, need_input, need_coeffs
    )
    # Only x and coeffs are differentiable; the settings get None.
    return (
        grad_x if need_input else None,
        grad_coeffs if need_coeffs else None,
        *(None,) * len(ctx.settings),
    )


deu_forward.register_autograd(_backward, setup_context=_setup_context)


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "deu: the activation is differentiable once; a second derivative (backward "
        "through its gradient, e.g. after autograd.grad(..., create_graph=True)) is "
        "not supported"
    )


deu_backward.register_autograd(_no_double_backward, setup_context=lambda ctx, inputs, output: None)
