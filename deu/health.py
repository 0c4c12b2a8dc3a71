"""``deu.health(model)``: how each DEU layer of a model is doing in training.

For every :class:`deu.DEU` (and initialised :class:`deu.LazyDEU`) layer, one
:class:`LayerHealth` record: how many neurons sit in each subspace, how far the
coefficients have moved since the layer was initialised, their gradient norms
(if a backward pass left gradients), and, given an input batch, the fraction of
outputs at the output clamp (``max_value``).

    >>> report = deu.health(model, inputs)   # inputs optional
    >>> print(report)                        # one line per layer
    >>> report[0].subspaces                  # {"a_b_c_disc_neg": 200, ...}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deu._subspaces import SUBSPACE_NAMES, check_classified, classify

__all__ = ["LayerHealth", "HealthReport", "health"]

_COLUMNS = ("a", "b", "c", "c1", "c2")


@dataclass(frozen=True)
class LayerHealth:
    """One DEU layer's state; see :func:`health`."""

    name: str
    num_neurons: int
    # Neurons per subspace (only subspaces that occur), by the generated names.
    subspaces: dict[str, int]
    # L2 norm over the neurons of the loss's gradient in each coefficient (a, b,
    # c, c1, c2; weight.grad through the parametrisation); None when there is none.
    grad_norm: dict[str, float] | None
    # Mean |coefficient - its initial value| per coefficient.
    moved: dict[str, float]
    # Fraction of the outputs at +-max_value on the given batch; None without one.
    clamped: float | None

    def __str__(self) -> str:
        present = ", ".join(f"{name} {n}" for name, n in self.subspaces.items())
        parts = [f"{self.name}: {self.num_neurons} neurons [{present}]"]
        parts.append("moved " + " ".join(f"{k}={v:.3g}" for k, v in self.moved.items()))
        if self.grad_norm is not None:
            parts.append("|grad| " + " ".join(f"{k}={v:.3g}" for k, v in self.grad_norm.items()))
        if self.clamped is not None:
            parts.append(f"at clamp {self.clamped:.2%}")
        return "; ".join(parts)


class HealthReport(list):
    """A list of :class:`LayerHealth`, printed one layer a line."""

    def __str__(self) -> str:
        return "\n".join(str(layer) for layer in self) if self else "no DEU layers"


def _layers(model: nn.Module):
    from deu.module import DEU

    for name, module in model.named_modules():
        if isinstance(module, DEU):
            yield name or type(module).__name__, module


def health(model: nn.Module, *inputs, **kwargs) -> HealthReport:
    """Report on every DEU layer of ``model``.

    Args:
        model: any module; its DEU layers are found with ``named_modules``.
        *inputs, **kwargs: optional. If given, ``model(*inputs, **kwargs)`` is run
            once under ``torch.no_grad()`` and each layer's fraction of outputs
            at the clamp is measured on it (the model's train/eval mode is kept).

    Returns:
        A :class:`HealthReport`, one :class:`LayerHealth` per layer, in module order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    layers = list(_layers(model))
    clamped: dict[str, float] = {}
    if inputs or kwargs:
        handles = []

        def hook(name, module):
            def record(_module, _args, output):
                at_clamp = output.detach().abs() >= module.max_value
                clamped[name] = float(at_clamp.float().mean()) if output.numel() else 0.0

            return record

        for name, module in layers:
            handles.append(module.register_forward_hook(hook(name, module)))
        try:
            with torch.no_grad():
                model(*inputs, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
    report = HealthReport()
    for name, module in layers:
        coeffs = module.coeffs.detach()
        _, index = classify(coeffs, module.epsilon, module.critical)
        check_classified(coeffs, index)
        counts = torch.bincount(index, minlength=len(SUBSPACE_NAMES)).tolist()
        subspaces = {SUBSPACE_NAMES[s]: n for s, n in enumerate(counts) if n}
        per_coefficient = module.coefficient_gradient()
        grad_norm = None
        if per_coefficient is not None:
            grad_norm = dict(zip(_COLUMNS, per_coefficient.norm(dim=0).tolist(), strict=True))
        moved_by = (coeffs - module.initial_coeffs.to(coeffs)).abs().mean(dim=0)
        report.append(
            LayerHealth(
                name=name,
                num_neurons=module.num_neurons,
                subspaces=subspaces,
                grad_norm=grad_norm,
                moved=dict(zip(_COLUMNS, moved_by.tolist(), strict=True)),
                clamped=clamped.get(name),
            )
        )
    return report
