"""The DEU activation as a function: ``deu.functional.deu(x, coeffs, ...)``."""

from __future__ import annotations

import torch

from deu._autograd import deu_forward
from deu._subspaces import CRITICAL_RULES

__all__ = ["deu", "BACKENDS"]

BACKENDS = ("auto", "torch", "cpp")


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` on ``device``: "torch" or "cpp".

    "auto" is the fused CPU kernel ("cpp") for CPU tensors and the generated
    PyTorch kernels elsewhere. The CPU kernel is compiled with the system C++
    compiler at first use (about a minute, then cached by PyTorch under
    ``~/.cache/torch_extensions``); if that fails, for instance with no
    compiler, the PyTorch kernels are used instead, with one warning per
    process. While torch.compile traces, nothing is built: "cpp" is used only
    if an earlier eager call built it. "torch" never needs a compiler.
    """
    from deu import _cpp

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    if device.type != "cpu":
        if backend == "cpp":
            raise ValueError(f"backend 'cpp' runs on the CPU; the input is on {device}")
        return "torch"
    if torch.compiler.is_compiling():
        return "cpp" if _cpp.loaded() else "torch"
    return "cpp" if _cpp.available() else "torch"


def _validate(x: torch.Tensor, coeffs: torch.Tensor, dim: int, settings: dict) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(coeffs, torch.Tensor):
        raise TypeError(f"coeffs must be a torch.Tensor, got {type(coeffs).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")
    if not coeffs.is_floating_point():
        raise TypeError(f"coeffs must be a floating-point tensor, got dtype {coeffs.dtype}")
    if x.dim() == 0:
        raise ValueError(
            "input must have at least one dimension (the neuron axis), got a 0-d tensor"
        )
    if not -x.dim() <= dim < x.dim():
        raise ValueError(
            f"dim must be in [{-x.dim()}, {x.dim() - 1}] for a {x.dim()}-d input, got {dim}"
        )
    dim = dim % x.dim()
    if coeffs.dim() != 2 or coeffs.shape[1] != 5:
        raise ValueError(f"coeffs must have shape (num_neurons, 5), got {tuple(coeffs.shape)}")
    if x.shape[dim] != coeffs.shape[0]:
        raise ValueError(
            f"input has {x.shape[dim]} neurons along dim {dim} (shape {tuple(x.shape)}), "
            f"expected {coeffs.shape[0]} (coeffs has shape {tuple(coeffs.shape)})"
        )
    if coeffs.device != x.device:
        raise ValueError(
            f"coeffs must be on the input's device ({x.device}), got coeffs on {coeffs.device}"
        )
    for name in ("epsilon", "steepness", "max_value"):
        value = settings[name]
        if not (value > 0 and value < float("inf")):
            raise ValueError(f"{name} must be positive and finite, got {value}")
    if settings["critical"] not in CRITICAL_RULES:
        raise ValueError(f"critical must be one of {CRITICAL_RULES}, got {settings['critical']!r}")
    return dim


def deu(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    *,
    dim: int = 1,
    epsilon: float = 0.01,
    steepness: float = 100.0,
    max_value: float = 1000.0,
    gravitation: bool = True,
    critical: str = "nearest",
    backend: str = "auto",
) -> torch.Tensor:
    r"""Apply a Differential Equation Unit to every neuron of ``x``.

    Neuron ``i`` (index ``i`` along ``dim``) computes :math:`y_i(x)`, the solution of
    :math:`a_i y'' + b_i y' + c_i y = u(t)` with :math:`y(0) = c1_i,\ y'(0) = c2_i`,
    evaluated at :math:`t = x`; ``coeffs[i] = (a, b, c, c1, c2)``.

    Args:
        x: input of any floating dtype; float16 and bfloat16 are computed in float32
            and returned in their own dtype.
        coeffs: ``(num_neurons, 5)`` tensor, columns a, b, c, c1, c2.
        dim: the neuron axis of ``x``. Default 1, so ``(N, C)`` and ``(N, C, *)`` work.
        epsilon: |a|, |b|, |c| below it count as zero; also the width of the
            critical-damping band |b^2 - 4ac| < epsilon.
        steepness: s of the sigmoid core sigmoid(s*t)/c used when a = b = 0.
        max_value: the output is clamped to [-max_value, max_value].
        gravitation: outward gravitation, the paper's gradients for coefficients
            that sit in a singular subspace. With False those gradients are zero.
        critical: "nearest" (c = b^2/(4a) inside the band) or "paper"
            (a = |b|/2*sign(a), c = |b|/2*sign(c), to reproduce the paper).
        backend: "auto" (default: the fused CPU kernel on the CPU, built at first
            use, and the generated PyTorch kernels elsewhere), "torch", or "cpp".
            See :func:`resolve_backend`.

    Returns:
        A tensor of the same shape and dtype as ``x``.

    Notes:
        ``coeffs`` are computed in the input's compute dtype (float64 for float64
        inputs, float32 otherwise); their gradient comes back in their own dtype.
        The operator is differentiable once (no double backward). A NaN input
        gives NaN in its own output element (and, as for any PyTorch reduction,
        NaN in its neuron's coefficient gradient); infinite inputs are not
        supported (NaN or a saturated value, depending on the subspace).
    """
    settings = dict(
        epsilon=float(epsilon),
        steepness=float(steepness),
        max_value=float(max_value),
        gravitation=bool(gravitation),
        critical=critical,
    )
    dim = _validate(x, coeffs, dim, settings)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    # The coefficients' finiteness is checked inside the operator (it needs the
    # values, which a traced graph does not have). Autocast is turned off around
    # the operator, which computes in float32/float64 itself.
    args = (
        x.to(compute),
        coeffs.to(compute),
        dim,
        settings["epsilon"],
        settings["steepness"],
        settings["max_value"],
        settings["gravitation"],
        settings["critical"],
        resolve_backend(backend, x.device),
    )
    # (torch has no autocast state for the meta device: shapes only, never autocast.)
    if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = deu_forward(*args)
    else:
        y = deu_forward(*args)
    return y.to(x.dtype)
