"""The DEU activation as a function: ``deu.functional.deu(x, coeffs, ...)``."""

from __future__ import annotations

import os
import sys

import torch

from deu._autograd import deu_apply
from deu._generated import MAX_EXP_CAP
from deu._plan import GRAVITATION_RULES, NUM_COEFFICIENTS
from deu._subspaces import CRITICAL_RULES

__all__ = ["deu", "BACKENDS", "DEFAULT_MAX_EXPONENT", "GRAVITATION_RULES", "PAPER_MAX_EXPONENT"]

BACKENDS = ("auto", "torch", "cpp", "triton")
# The cap on every exponent of the closed forms. The paper's published code caps
# at 14, against overflow only; then a homogeneous mode can grow by e^14 ~ 1.2e6
# for t < 0, and so can y's gradients in the coefficients, which makes training
# spike and diverge (EXPERIMENTS.md, stability). The default bounds every mode
# by e^4 ~ 55, chosen by that experiment.
DEFAULT_MAX_EXPONENT = 4.0
PAPER_MAX_EXPONENT = 14.0


_TRITON_IMPORTS: dict[str, bool] = {}


def _triton_imports() -> bool:
    """Whether triton imports (tried once; while torch.compile traces, never tried)."""
    if "triton" not in _TRITON_IMPORTS:
        if torch.compiler.is_compiling():
            return "triton" in sys.modules
        try:
            import triton  # noqa: F401
        except Exception:  # noqa: BLE001 - absent or broken: the Triton backend is off
            _TRITON_IMPORTS["triton"] = False
        else:
            _TRITON_IMPORTS["triton"] = True
    return _TRITON_IMPORTS["triton"]


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` on ``device``: "torch", "cpp" or "triton".

    "auto" is the fused CPU kernel ("cpp") for CPU tensors, the Triton kernels
    ("triton") for CUDA and ROCm tensors when triton imports, and the generated
    PyTorch kernels elsewhere. The CPU kernel is compiled with the system C++
    compiler at first use (about a minute, then cached by PyTorch under
    ``~/.cache/torch_extensions``); if that fails, for instance with no
    compiler, the PyTorch kernels are used instead, with one warning per
    process; the same holds for a Triton kernel that fails to compile. While
    torch.compile traces, nothing is built: "cpp" is used only if an earlier
    eager call built it. "torch" never needs a compiler. "triton" on CPU tensors
    runs Triton's interpreter, and only when TRITON_INTERPRET=1 is set.
    """
    from deu import _cpp

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    if backend == "triton":
        if not _triton_imports():
            raise ValueError("backend 'triton' needs the triton package, which does not import")
        if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                "backend 'triton' runs on CUDA and ROCm devices; on CPU tensors only under "
                "Triton's interpreter, with TRITON_INTERPRET=1 set (it is not set here)"
            )
        if device.type not in ("cpu", "cuda"):
            raise ValueError(
                f"backend 'triton' runs on CUDA and ROCm devices; the input is on {device}"
            )
        return "triton"
    if device.type != "cpu":
        if backend == "cpp":
            raise ValueError(f"backend 'cpp' runs on the CPU; the input is on {device}")
        # ROCm builds of torch call their devices "cuda" too.
        return "triton" if device.type == "cuda" and _triton_imports() else "torch"
    if torch.compiler.is_compiling():
        return "cpp" if _cpp.loaded() else "torch"
    return "cpp" if _cpp.available() else "torch"


def gravitation_rule(gravitation: bool | str) -> str:
    """The rule for ``gravitation``: True is "derived", False is "off"."""
    if gravitation is True:
        return "derived"
    if gravitation is False:
        return "off"
    if gravitation in GRAVITATION_RULES:
        return str(gravitation)
    raise ValueError(
        f"gravitation must be True, False or one of {GRAVITATION_RULES}, got {gravitation!r}"
    )


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
    if coeffs.dim() != 2 or coeffs.shape[1] != NUM_COEFFICIENTS:
        raise ValueError(
            f"coeffs must have shape (num_neurons, {NUM_COEFFICIENTS}), "
            f"got {tuple(coeffs.shape)}"
        )
    if x.shape[dim] != coeffs.shape[0]:
        raise ValueError(
            f"input has {x.shape[dim]} neurons along dim {dim} (shape {tuple(x.shape)}), "
            f"expected {coeffs.shape[0]} (coeffs has shape {tuple(coeffs.shape)})"
        )
    if coeffs.device != x.device:
        raise ValueError(
            f"coeffs must be on the input's device ({x.device}), got coeffs on {coeffs.device}"
        )
    check_settings(**settings)
    return dim


def check_settings(
    *,
    epsilon: float,
    steepness: float,
    max_exponent: float,
    max_value: float,
    critical: str,
) -> None:
    """Raise a ValueError naming the setting, its range and its value, if one is out of range.

    :func:`deu` checks its settings on every call; :class:`deu.DEU` checks its own
    when it is built, so that a bad one is reported where it was written.
    """
    for name, value in (("epsilon", epsilon), ("steepness", steepness), ("max_value", max_value)):
        if not (value > 0 and value < float("inf")):
            raise ValueError(f"{name} must be positive and finite, got {value}")
    if not 0 < max_exponent <= MAX_EXP_CAP:
        raise ValueError(f"max_exponent must be in (0, {MAX_EXP_CAP:g}], got {max_exponent}")
    if critical not in CRITICAL_RULES:
        raise ValueError(f"critical must be one of {CRITICAL_RULES}, got {critical!r}")


def deu(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    *,
    dim: int = 1,
    epsilon: float = 0.01,
    steepness: float = 100.0,
    max_exponent: float = DEFAULT_MAX_EXPONENT,
    max_value: float = 1000.0,
    gravitation: bool | str = True,
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
        max_exponent: every exponent of the closed forms is capped at it, so no
            homogeneous mode grows beyond e^max_exponent (4: 55x). The paper's
            code uses 14 (``PAPER_MAX_EXPONENT``); at most 80.
        max_value: the output is clamped to [-max_value, max_value].
        gravitation: outward gravitation, a gradient for a coefficient that sits
            in a singular subspace (|p| < epsilon, so y does not depend on it).
            True or "derived": the derived term of ``generated/SOLUTIONS.md``, the
            first-order change of y with p's term added to the ODE (the exact
            dy/dp at p = 0 where the order stays, the outer perturbation term
            where it rises). "neighbour": the paper's, the gradient of the
            nearest non-singular ODE matched in value and slope at the mean
            input. False: those gradients are zero.
        critical: "nearest" (c = b^2/(4a) inside the band) or "paper"
            (a = |b|/2*sign(a), c = |b|/2*sign(c), to reproduce the paper).
        backend: "auto" (default: the fused CPU kernel on the CPU, built at first
            use, the Triton kernels on CUDA and ROCm devices where triton imports,
            and the generated PyTorch kernels elsewhere), "torch", "cpp" or "triton".
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
    epsilon, steepness = float(epsilon), float(steepness)
    max_exponent, max_value = float(max_exponent), float(max_value)
    rule = gravitation_rule(gravitation)
    settings = dict(
        epsilon=epsilon,
        steepness=steepness,
        max_exponent=max_exponent,
        max_value=max_value,
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
        epsilon,
        steepness,
        max_exponent,
        max_value,
        rule,
        critical,
        resolve_backend(backend, x.device),
    )
    # (torch has no autocast state for the meta device: shapes only, never autocast.)
    if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = deu_apply(*args)
    else:
        y = deu_apply(*args)
    return y.to(x.dtype)
