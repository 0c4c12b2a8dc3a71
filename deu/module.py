"""``deu.DEU``: the DEU activation as an ``nn.Module`` with learned coefficients."""

from __future__ import annotations

import torch
from torch import nn

from deu import functional as F
from deu._autograd import layer_apply
from deu._generated import CLASSIFIED, SUBSPACES
from deu._parametrisation import (  # noqa: F401 - importable from here, as before
    PARAMETRISATIONS,
    coefficient_slope,
    coefficients_from_weight,
    weight_from_coefficients,
)
from deu._plan import NUM_COEFFICIENTS, Settings
from deu._subspaces import check_classified, classify

__all__ = [
    "DEU",
    "PRESETS",
    "DEFAULT_COEFFICIENT_SCALE",
    "PARAMETRISATIONS",
    "CoefficientsDiverged",
]


NUM_CLASSIFIED = len(CLASSIFIED)  # a, b, c: the coefficients the subspaces classify


class CoefficientsDiverged(ValueError):
    """A DEU layer's learned coefficients became non-finite or too large to classify:
    training diverged. A ValueError, so handlers of the layer's earlier errors
    still catch it."""


# The coefficients are a function of ``weight``, the learnable parameter, with
# slope DEFAULT_COEFFICIENT_SCALE at 0: near zero an optimiser's step moves them
# 0.1x as far as an ordinary weight under Adam (0.01x under SGD, whose step
# follows the gradient). With 1 (the paper's, which trains the coefficients
# like biases) SGD with momentum at lr >= 0.03 makes DEU networks diverge.
DEFAULT_COEFFICIENT_SCALE = 0.1


# Named initialisations: (a, b, c, c1, c2) for every neuron, and what they give.
PRESETS: dict[str, tuple[tuple[float, float, float, float, float], str]] = {
    "relu": ((0.0, 1.0, 0.0, 0.0, 0.0), "y = ReLU(t)"),
    "sigmoid": ((0.0, 0.0, 1.0, 0.0, 0.0), "y = sigmoid(s*t)"),
    "quadratic": ((1.0, 0.0, 0.0, 0.0, 0.0), "y = ReLU(t)^2 / 2"),
    "oscillator": ((1.0, 0.0, 1.0, 0.0, 0.0), "y = u(t) * (1 - cos t)"),
    "damped": ((1.0, 1.0, 1.0, 0.0, 0.0), "damped oscillation settling at 1"),
}


class DEU(nn.Module):
    r"""Differential Equation Units: one learned ODE per neuron.

    Neuron :math:`i` applies :math:`y_i(t)`, the solution of

    .. math::
        a_i y''(t) + b_i y'(t) + c_i y(t) = u(t), \qquad y(0) = c1_i,\ y'(0) = c2_i,

    to its input :math:`t`, where :math:`u` is the unit step. The five
    coefficients of every neuron are learned. Special cases include ReLU
    (a = c = 0, b = 1), a steep sigmoid (a = b = 0, c = 1), a rectified quadratic
    (b = c = 0) and sine-like oscillations (b = 0, a*c > 0); see
    ``deu._generated`` and ``generated/SOLUTIONS.md`` for every closed form.

    Args:
        num_neurons: size of the neuron axis of the input.
        dim: the neuron axis. Default: 1, for ``(N, C)`` and ``(N, C, *)`` inputs.
        init: a preset name from ``deu.module.PRESETS`` (``"relu"``,
            ``"sigmoid"``, ``"quadratic"``, ``"oscillator"``, ``"damped"``),
            ``"random"`` (the paper's: a, b, c uniform in (0, 1), c1 = c2 = 0) or
            a tensor of shape ``(num_neurons, 5)``. Default: ``"relu"`` (every
            neuron starts as ReLU and moves from there; ``"random"`` with
            ``paper=True``).
        epsilon: coefficients with magnitude below it count as zero. Default: 0.01.
        steepness: s of the sigmoid core used when a = b = 0. Default: 100.
        max_exponent: the cap on every exponent of the closed forms, so that no
            homogeneous mode grows beyond e^max_exponent. Default: 4 (14 with
            ``paper=True``, the paper's code).
        max_value: outputs are clamped to [-max_value, max_value]. Default: 1000.
        gravitation: outward gravitation, a gradient for coefficients below
            epsilon: True or ``"derived"`` (default), ``"neighbour"`` (the paper's,
            the default with ``paper=True``) or False; see ``deu.functional.deu``.
        critical: ``"nearest"`` or ``"paper"`` handling of the critical band.
            Default: ``"nearest"`` (``"paper"`` with ``paper=True``).
        backend: ``"auto"``, ``"torch"``, ``"cpp"`` or ``"triton"``; see
            ``deu.functional.deu``.
        coefficient_scale: the slope of the map from ``weight`` (the learnable
            parameter) to the coefficients at 0, so that near zero an optimiser
            moves them at this fraction of its step for ordinary weights (an
            equalised learning rate; no parameter groups needed). Default: 0.1
            (1, the paper's, with ``paper=True``).
        parametrisation: how ``weight`` becomes the coefficients: ``"symlog"``
            (default): a, b, c = coefficient_scale * sign(w) * (e^|w| - 1), and
            c1, c2 = coefficient_scale * w, so that one step changes a, b, c by
            a fraction of (coefficient_scale + |p|), relative steps for large
            coefficients, the linear map's steps near 0; ``"linear"`` (the
            default with ``paper=True``): coefficient_scale * weight. Both
            reach every coefficient vector: the set of functions is the same.
        paper: the paper's exact rules: its exponent cap of 14, its critical
            band rule a = c = |b|/2, its neighbour gravitation, its
            coefficients trained like biases (scale 1, linear) and its random
            initialisation, unless ``max_exponent``, ``critical``,
            ``gravitation``, ``coefficient_scale``, ``parametrisation`` or
            ``init`` are given. The default model differs from the paper in
            exactly these six.

    Shape:
        - Input: :math:`(N, C, *)` with ``C = num_neurons`` (or any shape whose
          ``dim`` axis has ``num_neurons`` entries).
        - Output: same shape as the input.

    Attributes:
        weight: the learnable ``(num_neurons, 5)`` parameter.
        coeffs: the coefficients, columns (a, b, c, c1, c2): a differentiable
            tensor computed from ``weight`` (see ``parametrisation``). Set
            them by assigning (``layer.coeffs = tensor``); an in-place change of
            the returned tensor does not reach ``weight``.

    Examples::

        >>> act = deu.DEU(16, init="relu")
        >>> y = act(torch.randn(8, 16))
        >>> print(act.describe().splitlines()[0])
        0.0000 y'' + 1.0000 y' + 0.0000 y = u(t)   y(0)=0   [ReLU-like ramp]
    """

    def __init__(
        self,
        num_neurons: int,
        *,
        dim: int = 1,
        init: str | torch.Tensor | None = None,
        epsilon: float = 0.01,
        steepness: float = 100.0,
        max_exponent: float | None = None,
        max_value: float = 1000.0,
        gravitation: bool | str | None = None,
        critical: str | None = None,
        backend: str = "auto",
        coefficient_scale: float | None = None,
        parametrisation: str | None = None,
        paper: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if isinstance(num_neurons, bool) or not isinstance(num_neurons, int) or num_neurons < 1:
            raise ValueError(f"num_neurons must be a positive int, got {num_neurons!r}")
        if init is None:
            # ReLU to start (the safe drop-in: the broad experiment's SGD runs
            # diverge from the paper's random start where ReLU's do not); the
            # paper's random start with paper=True.
            init = "random" if paper else "relu"
        if isinstance(init, str) and init != "random" and init not in PRESETS:
            known = ", ".join(["random", *PRESETS])
            raise ValueError(f"init must be one of {known} or a tensor, got {init!r}")
        if isinstance(init, torch.Tensor) and tuple(init.shape) != (num_neurons, NUM_COEFFICIENTS):
            raise ValueError(
                f"an init tensor must have shape ({num_neurons}, {NUM_COEFFICIENTS}), "
                f"got {tuple(init.shape)}"
            )
        self.num_neurons = num_neurons
        self.dim = dim
        self.init = init if isinstance(init, str) else "tensor"
        self.epsilon = epsilon
        self.steepness = steepness
        self.paper = bool(paper)
        if max_exponent is None:
            max_exponent = F.PAPER_MAX_EXPONENT if paper else F.DEFAULT_MAX_EXPONENT
        self.max_exponent = float(max_exponent)
        self.max_value = max_value
        if gravitation is None:
            gravitation = "neighbour" if paper else True
        F.gravitation_rule(gravitation)  # a clear error now rather than at the first call
        self.gravitation = gravitation
        self.critical = critical if critical is not None else ("paper" if paper else "nearest")
        # A bad setting is an error here, where it was written, not at the first forward.
        F.check_settings(
            epsilon=float(epsilon),
            steepness=float(steepness),
            max_exponent=self.max_exponent,
            max_value=float(max_value),
            critical=self.critical,
        )
        self.backend = backend
        if coefficient_scale is None:
            coefficient_scale = 1.0 if paper else DEFAULT_COEFFICIENT_SCALE
        if not 0 < coefficient_scale < float("inf"):
            raise ValueError(
                f"coefficient_scale must be positive and finite, got {coefficient_scale}"
            )
        self.coefficient_scale = float(coefficient_scale)
        if parametrisation is None:
            parametrisation = "linear" if paper else "symlog"
        if parametrisation not in PARAMETRISATIONS:
            raise ValueError(
                f"parametrisation must be one of {PARAMETRISATIONS}, got {parametrisation!r}"
            )
        self.parametrisation = parametrisation
        self.weight = nn.Parameter(
            torch.empty(num_neurons, NUM_COEFFICIENTS, device=device, dtype=dtype)
        )
        self._init_tensor = init.detach().clone() if isinstance(init, torch.Tensor) else None
        self.reset_parameters()

    @property
    def coeffs(self) -> torch.Tensor:
        """The ODE coefficients (a, b, c, c1, c2) per neuron, computed from ``weight``."""
        return coefficients_from_weight(self.weight, self.coefficient_scale, self.parametrisation)

    @coeffs.setter
    def coeffs(self, value: torch.Tensor) -> None:
        with torch.no_grad():
            value = torch.as_tensor(value).to(self.weight)
            self.weight.copy_(
                weight_from_coefficients(value, self.coefficient_scale, self.parametrisation)
            )

    def coefficient_gradient(self) -> torch.Tensor | None:
        """d loss / d coeffs from ``weight.grad`` (None before a backward pass)."""
        if self.weight.grad is None:
            return None
        slope = coefficient_slope(
            self.weight.detach(), self.coefficient_scale, self.parametrisation
        )
        return self.weight.grad.detach() / slope

    def reset_parameters(self) -> None:
        with torch.no_grad():
            coeffs = torch.zeros(self.weight.shape, dtype=self.weight.dtype)
            if self._init_tensor is not None:
                coeffs.copy_(self._init_tensor)
            elif self.init == "random":
                # a, b, c in (0, 1), strictly positive; c1 = c2 = 0.
                tiny = torch.finfo(coeffs.dtype).tiny
                coeffs[:, :NUM_CLASSIFIED].uniform_(0.0, 1.0).clamp_(min=tiny)
            else:
                values, _ = PRESETS[self.init]
                coeffs.copy_(torch.tensor(values).expand(self.num_neurons, NUM_COEFFICIENTS))
            self.coeffs = coeffs
        # Where the coefficients started, for deu.health (not saved with the model).
        self.register_buffer("initial_coeffs", self.coeffs.detach().clone(), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before the coefficient scale stored the coefficients.
        old, new = prefix + "coeffs", prefix + "weight"
        if old in state_dict and new not in state_dict:
            state_dict[new] = weight_from_coefficients(
                state_dict.pop(old), self.coefficient_scale, self.parametrisation
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        try:
            fused = self._eager_call(input)
            if fused is not None:
                return fused
            return self._apply_deu(input, self.coeffs)
        except ValueError as error:
            text = str(error)
            if "coeffs must be finite" not in text and "fall in no subspace" not in text:
                raise
            raise self._diverged(self.coeffs, text) from error

    def _eager_call(self, input: torch.Tensor) -> torch.Tensor | None:
        """The call in one step (deu._autograd.layer_apply) where it can be: plain
        CPU tensors of the right shape on the fused kernel, not traced; else None,
        and the general path (which checks and reports everything) runs."""
        if not (
            isinstance(input, torch.Tensor)
            and input.dim() > 0
            and -input.dim() <= self.dim < input.dim()
            and input.shape[self.dim] == self.num_neurons
            and input.device.type == "cpu"
            and self.backend in ("auto", "cpp")
            and not torch.compiler.is_compiling()
        ):
            return None
        # The settings of this call, built once per input rank and setting values
        # (a frozen dataclass costs more to build than the fused kernel's call).
        key = (
            input.dim(),
            self.dim,
            self.epsilon,
            self.steepness,
            self.max_exponent,
            self.max_value,
            self.gravitation,
            self.critical,
            self.backend,
        )
        cache = self.__dict__.setdefault("_settings_cache", {})
        settings = cache.get(key)
        if settings is None:
            F.check_settings(
                epsilon=float(self.epsilon),
                steepness=float(self.steepness),
                max_exponent=self.max_exponent,
                max_value=float(self.max_value),
                critical=self.critical,
            )
            settings = Settings(
                self.dim % input.dim(),
                float(self.epsilon),
                float(self.steepness),
                self.max_exponent,
                float(self.max_value),
                F.gravitation_rule(self.gravitation),
                self.critical,
                F.resolve_backend(self.backend, input.device),
            )
            if len(cache) > 16:  # settings changed often: keep it small
                cache.clear()
            cache[key] = settings
        return layer_apply(
            input, self.weight, self.coefficient_scale, self.parametrisation, settings
        )

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: the live module keeps its cache
        state.pop("_settings_cache", None)  # rebuilt on the next call
        return state

    def _diverged(self, coeffs: torch.Tensor, text: str) -> CoefficientsDiverged:
        def largest(values: torch.Tensor) -> float:
            finite = values[torch.isfinite(values)]
            return finite.abs().max().item() if finite.numel() else float("nan")

        values = coeffs.detach()
        non_finite = int((~torch.isfinite(values)).any(dim=1).sum())
        return CoefficientsDiverged(
            f"DEU({self.num_neurons}): the learned coefficients diverged during training "
            f"(largest finite |coefficient| {largest(values):.3g}, largest |weight| "
            f"{largest(self.weight.detach()):.3g}; {non_finite} of {self.num_neurons} "
            "neurons non-finite). The optimiser's steps were too large for this layer: "
            "lower the learning rate, clip the gradient norm "
            "(torch.nn.utils.clip_grad_norm_), or keep the default "
            f"parametrisation='symlog' (this layer: {self.parametrisation!r}, "
            f"coefficient_scale={self.coefficient_scale:g}); deu.health(model) shows the "
            f"coefficient gradients per layer. The operator said: {text}"
        )

    def _apply_deu(self, input: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        return F.deu(
            input,
            coeffs,
            dim=self.dim,
            epsilon=self.epsilon,
            steepness=self.steepness,
            max_exponent=self.max_exponent,
            max_value=self.max_value,
            gravitation=self.gravitation,
            critical=self.critical,
            backend=self.backend,
        )

    def subspaces(self) -> list[str]:
        """Each neuron's current subspace name."""
        from deu._subspaces import subspaces

        return subspaces(self.coeffs, self.epsilon)

    def describe(self) -> str:
        """One line per neuron: the ODE its kernel solves, its initial conditions and
        its subspace; where that ODE differs from the stored coefficients (a
        coefficient below epsilon counts as zero; inside the critical band c is
        moved onto b^2 = 4ac), the stored a, b, c follow."""
        stored = self.coeffs.detach().double()
        effective, index = classify(stored, self.epsilon, self.critical)
        check_classified(stored, index)
        lines = []
        for (a, b, c, c1, c2), raw, s in zip(
            effective.tolist(), stored.tolist(), index.tolist(), strict=True
        ):
            subspace = SUBSPACES[s]
            ode = f"{a:.4f} y'' {'-' if b < 0 else '+'} {abs(b):.4f} y' "
            ode += f"{'-' if c < 0 else '+'} {abs(c):.4f} y = u(t)"
            if subspace.order == 2:
                initial = f"y(0)={c1:.4g}, y'(0)={c2:.4g}"
            elif subspace.order == 1:
                initial = f"y(0)={c1:.4g}"
            else:
                initial = f"y = sigmoid({self.steepness:g} t)/c"
            line = f"{ode}   {initial}   [{subspace.description}]"
            if [a, b, c] != raw[:3]:
                # Zeroed below epsilon, or moved onto the critical equation.
                line += f"   (stored a, b, c = {raw[0]:.4g}, {raw[1]:.4g}, {raw[2]:.4g})"
            lines.append(line)
        return "\n".join(lines)

    def extra_repr(self) -> str:
        parts = [f"{self.num_neurons}", f"dim={self.dim}", f"init={self.init!r}"]
        parts += [f"epsilon={self.epsilon}", f"steepness={self.steepness}"]
        parts += [f"max_exponent={self.max_exponent:g}", f"max_value={self.max_value}"]
        parts.append(f"gravitation={self.gravitation!r}")
        parts.append(f"coefficient_scale={self.coefficient_scale:g}")
        if self.parametrisation != "symlog":
            parts.append(f"parametrisation={self.parametrisation!r}")
        if self.paper:
            parts.append("paper=True")
        if self.critical != "nearest":
            parts.append(f"critical={self.critical!r}")
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)
