"""``deu.LazyDEU`` and ``deu.replace_activations``: DEUs in models that already exist."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from deu.module import DEU

__all__ = ["LazyDEU", "replace_activations", "DEFAULT_ACTIVATIONS"]

# The activation modules replace_activations swaps by default.
DEFAULT_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
)


class LazyDEU(LazyModuleMixin, DEU):
    r"""A :class:`deu.DEU` whose ``num_neurons`` is inferred from the first input.

    ``num_neurons`` becomes ``input.shape[dim]`` at the first forward pass, after
    which the module is a regular :class:`deu.DEU`. Takes the keyword arguments
    of :class:`deu.DEU` except a tensor ``init`` (its shape is not known yet).
    As with every lazy module, do a dry run before building the optimizer.

    Examples::

        >>> act = deu.LazyDEU(init="relu")
        >>> act(torch.randn(2, 7)).shape
        torch.Size([2, 7])
        >>> act
        DEU(7, dim=1, init='relu', epsilon=0.01, steepness=100.0, max_exponent=4, ...)
    """

    cls_to_become = DEU
    weight: UninitializedParameter  # type: ignore[assignment]

    def __init__(self, *, device=None, dtype=None, **kwargs) -> None:
        if isinstance(kwargs.get("init"), torch.Tensor):
            raise ValueError("LazyDEU takes a preset name or 'random' as init, not a tensor")
        super().__init__(1, device=device, dtype=dtype, **kwargs)
        self.num_neurons = 0
        self.weight = UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.num_neurons != 0:
            super().reset_parameters()

    def initialize_parameters(self, input: torch.Tensor) -> None:
        if self.has_uninitialized_params():
            if input.dim() == 0 or not -input.dim() <= self.dim < input.dim():
                raise ValueError(
                    f"LazyDEU(dim={self.dim}) cannot infer num_neurons from an input of "
                    f"shape {tuple(input.shape)}"
                )
            with torch.no_grad():
                self.num_neurons = input.shape[self.dim]
                self.weight.materialize((self.num_neurons, 5))
                self.reset_parameters()


def replace_activations(
    model: nn.Module,
    types: Iterable[type[nn.Module]] = DEFAULT_ACTIVATIONS,
    **kwargs,
) -> nn.Module:
    """Swap ``model``'s activation modules of the given types for DEU layers, in place.

    Each replaced module becomes a :class:`LazyDEU` with ``kwargs`` (for example
    ``init="relu"`` to start from the function being replaced, or ``dim=-1`` for
    channels-last activations such as a transformer's), so the number of neurons
    is read from the first input. A module object registered once but called at
    several places keeps doing so, with one set of coefficients; if those places
    have different widths (torchvision's Bottleneck reuses one ``relu`` for
    different channel counts), the first call fixes the width and the others fail
    with a ValueError naming both sizes: give such a model one activation module
    per call site first. Functional activations (``F.relu`` inside ``forward``)
    are not modules and are left alone.
    Run one forward pass before creating the optimizer.

    Returns ``model``.

    Example::

        >>> net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> net = deu.replace_activations(net, init="relu")
        >>> _ = net(torch.randn(4, 3))  # dry run: infers 8 neurons
        >>> net[1]
        DEU(8, dim=1, init='relu', epsilon=0.01, steepness=100.0, max_exponent=4, ...)
    """
    types = tuple(types)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise TypeError(f"types must be nn.Module subclasses, got {types!r}")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, types):
                setattr(parent, name, LazyDEU(**kwargs))
    return model
