"""The DEU activation as a PyTorch custom operator, with its autograd.

The values and gradients are ``deu._values``'s; this module registers the
operators, their fake kernels and the autograd formula.
"""

from __future__ import annotations

import torch

from deu import _cpp

# Settings and the neighbour rule's helpers stay importable from here (tests).
from deu._neighbour import _evaluate_at, _matched_initial_conditions  # noqa: F401
from deu._parametrisation import _PLAIN
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


def _forward(x: torch.Tensor, coeffs: torch.Tensor, settings: Settings) -> torch.Tensor:
    """The forward operator's body, shared by the custom operator and the eager path."""
    if settings.backend != "cpp":  # the fused kernel checks them itself, in one pass
        _check_finite(coeffs)
    return _in_layout_of(forward_values(x, coeffs, settings), x)


def _backward_values(x, coeffs, grad_output, settings: Settings, need_input, need_coeffs):
    """The backward operator's body, shared by the custom operator and the eager path."""
    grad_x, grad_coeffs = backward_values(
        x, coeffs, grad_output.contiguous(), settings, need_input, need_coeffs
    )
    return (
        _in_layout_of(grad_x, x) if need_input else grad_x,
        _in_layout_of(grad_coeffs, coeffs) if need_coeffs else grad_coeffs,
    )


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
    return _forward(
        x,
        coeffs,
        Settings(dim, epsilon, steepness, max_exponent, max_value, gravitation, critical, backend),
    )


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
    return _backward_values(x, coeffs, grad_output, settings, need_input, need_coeffs)


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


DOUBLE_BACKWARD = (
    "deu: the activation is differentiable once; a second derivative (backward "
    "through its gradient, e.g. after autograd.grad(..., create_graph=True)) is "
    "not supported"
)


def _no_double_backward(ctx, *grads):
    raise RuntimeError(DOUBLE_BACKWARD)


deu_backward.register_autograd(_no_double_backward, setup_context=lambda ctx, inputs, output: None)


# The eager path. Outside torch.compile and torch.export the custom operator buys
# nothing but its dispatch, which costs more than the fused kernel itself at small
# shapes (issue 18: a (32, 64) batch). So an eager call on the fused CPU kernel runs
# the same two bodies (_forward, _backward_values) through a plain autograd.Function;
# everything else (tracing, fake and meta tensors, dispatch modes, functorch
# transforms, the other backends) goes through the operator. Same kernels, same
# values, bit for bit (tests/test_eager.py).


class _SecondDerivative(torch.autograd.Function):
    """Passes first derivatives on; a backward through them raises DOUBLE_BACKWARD
    (as the operator's registered backward does)."""

    @staticmethod
    def forward(ctx, inputs_x, inputs_coeffs, *grads):
        return tuple(g.clone() for g in grads)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(DOUBLE_BACKWARD)


def _first_order_only(inputs, *grads):
    """``grads`` as they are, unless autograd records the backward (create_graph):
    then tied to ``inputs`` through :class:`_SecondDerivative`, so that they
    require grad, as the operator's do, and differentiating them again is a clear
    error."""
    if not torch.is_grad_enabled():
        return grads
    present = [g for g in grads if g is not None]
    tied = iter(_SecondDerivative.apply(*inputs, *present))
    return tuple(None if g is None else next(tied) for g in grads)


class _EagerDEU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeffs, settings):
        ctx.save_for_backward(x, coeffs)
        ctx.settings = settings
        return _forward(x, coeffs, settings)

    @staticmethod
    def backward(ctx, grad_output):
        x, coeffs = ctx.saved_tensors
        need_input, need_coeffs = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.no_grad():
            grad_x, grad_coeffs = _backward_values(
                x, coeffs, grad_output, ctx.settings, need_input, need_coeffs
            )
        grad_x, grad_coeffs = _first_order_only(
            (x, coeffs), grad_x if need_input else None, grad_coeffs if need_coeffs else None
        )
        return grad_x, grad_coeffs, None


def _eager(x: torch.Tensor, coeffs: torch.Tensor) -> bool:
    """Whether a call on the fused CPU kernel may take the eager path: plain CPU
    tensors, no tracing (torch.compile, torch.export, torch.jit.trace), no
    dispatch or function mode, no functorch transform."""
    return (
        type(x) is torch.Tensor
        and type(coeffs) in _PLAIN
        and x.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._is_torch_function_mode_enabled()
        and not torch._C._functorch.is_functorch_wrapped_tensor(x)
        and not torch._C._functorch.is_functorch_wrapped_tensor(coeffs)
    )


def deu_apply(
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
    """The activation: the eager path where :func:`_eager` allows it, else the operator."""
    if backend == "cpp" and _eager(x, coeffs):
        settings = Settings(
            dim, epsilon, steepness, max_exponent, max_value, gravitation, critical, backend
        )
        return _EagerDEU.apply(x, coeffs, settings)
    return deu_forward(
        x, coeffs, dim, epsilon, steepness, max_exponent, max_value, gravitation, critical, backend
    )


class _EagerLayer(torch.autograd.Function):
    """A deu.DEU layer's eager call in one autograd node: its parametrisation
    (deu._parametrisation, computed by the extension's parametrise, the same ATen
    operations in one call) and the activation, with the gradients each would give
    on its own (the coefficients' cast to the input's dtype and back included)."""

    @staticmethod
    def forward(ctx, x, weight, scale, parametrisation, settings):
        coeffs, saved = _cpp.extension().parametrise(weight, scale, parametrisation == "symlog")
        coeffs = coeffs.to(x.dtype)
        ctx.save_for_backward(x, coeffs, saved, weight)
        ctx.weight_dtype, ctx.scale, ctx.settings = weight.dtype, scale, settings
        return _forward(x, coeffs, settings)

    @staticmethod
    def backward(ctx, grad_output):
        x, coeffs, saved, weight = ctx.saved_tensors
        need_input, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.no_grad():
            grad_x, grad_coeffs = _backward_values(
                x, coeffs, grad_output, ctx.settings, need_input, need_weight
            )
            grad_weight = None
            if need_weight:
                grad_coeffs = grad_coeffs.to(ctx.weight_dtype)
                grad_weight = _cpp.extension().parametrise_backward(grad_coeffs, saved, ctx.scale)
        grad_x, grad_weight = _first_order_only(
            (x, weight), grad_x if need_input else None, grad_weight
        )
        return grad_x, grad_weight, None, None, None


def layer_apply(
    x: torch.Tensor, weight: torch.Tensor, scale: float, parametrisation: str, settings: Settings
) -> torch.Tensor | None:
    """A layer's eager call on the fused CPU kernel, or None where it must take the
    general path (deu.functional.deu on its coefficients): not the fused kernel, a
    dtype other than float32/float64, autocast on, or anything :func:`_eager` refuses.
    The caller has checked the input's shape against ``weight``."""
    if (
        settings.backend != "cpp"
        or x.dtype not in (torch.float32, torch.float64)
        or weight.device.type != "cpu"
        or not _eager(x, weight)
        or torch.is_autocast_enabled("cpu")
    ):
        return None
    if not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad):
        coeffs, _ = _cpp.extension().parametrise(
            weight.detach(), scale, parametrisation == "symlog"
        )
        return _forward(x, coeffs.to(x.dtype), settings)
    return _EagerLayer.apply(x, weight, scale, parametrisation, settings)
