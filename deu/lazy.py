"""``deu.LazyDEU`` and ``deu.replace_activations``: DEUs in models that already exist."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from deu._plan import NUM_COEFFICIENTS
from deu.module import DEU

__all__ = ["LazyDEU", "PerCallSite", "materialize", "replace_activations", "DEFAULT_ACTIVATIONS"]

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

        >>> act = deu.LazyDEU()
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
                self.weight.materialize((self.num_neurons, NUM_COEFFICIENTS))
                self.reset_parameters()


class PerCallSite(nn.Module):
    """One activation module per call site of a module object that a model calls
    at several places in one forward pass (torchvision's and MONAI's residual
    blocks call one ``relu``/``act`` twice).

    The k-th call within a forward pass of the model goes to ``sites[k]``. The
    sites are created during the first forward pass (the dry run), by
    ``factory``; after it the number of sites is fixed and calls cycle through
    them in order, and the model's forward pre-hook (installed by
    :func:`replace_activations`) starts every forward pass at site 0.
    """

    def __init__(self, factory) -> None:
        super().__init__()
        self.sites = nn.ModuleList()
        self._factory = factory
        self._call = 0
        self._fixed = False

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self._call >= len(self.sites):
            if self._fixed:
                self._call = 0
            else:
                self.sites.append(self._factory())
        site = self.sites[self._call]
        self._call += 1
        return site(input)

    def _start_pass(self) -> None:
        if self.sites:
            self._fixed = True
        self._call = 0

    def extra_repr(self) -> str:
        return f"call sites={len(self.sites)}"


def materialize(model: nn.Module, *example_inputs, **example_kwargs) -> nn.Module:
    """Run ``model`` once on an example input so that every lazy layer learns its
    size, without side effects: in eval mode (BatchNorm keeps its running
    statistics, dropout is off), without gradients, every buffer restored
    afterwards and each module's training flag as it was. Returns ``model``.

    Do this (or let :func:`replace_activations` do it, with ``example_input``)
    before building the optimizer.
    """
    modes = {module: module.training for module in model.modules()}
    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    model.eval()
    try:
        with torch.no_grad():
            model(*example_inputs, **example_kwargs)
    finally:
        for module, training in modes.items():
            module.training = training
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in buffers and buffers[name].shape == buffer.shape:
                    buffer.copy_(buffers[name])
    return model


def _shared_call_sites(model: nn.Module, replaced: dict[nn.Module, str]):
    """Forward hooks that count the calls of each replaced module per forward pass
    of ``model`` and warn once for a module called at several places."""
    counts: dict[nn.Module, int] = {}
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def reset(module, args):
        counts.clear()

    def count(module, args, output):
        counts[module] = counts.get(module, 0) + 1

    def report(module, args, output):
        for child, calls in counts.items():
            if calls > 1:
                warnings.warn(
                    f"deu.replace_activations: the activation module {replaced[child]!r} is "
                    f"called at {calls} places in one forward pass, so those places share "
                    "one set of DEU coefficients (they must also have the same width). "
                    "Pass per_call_site=True to give each call site its own.",
                    stacklevel=2,
                )
        for handle in handles:
            handle.remove()

    handles.append(model.register_forward_pre_hook(reset))
    handles += [child.register_forward_hook(count) for child in replaced]
    handles.append(model.register_forward_hook(report))


def replace_activations(
    model: nn.Module,
    types: Iterable[type[nn.Module]] = DEFAULT_ACTIVATIONS,
    *,
    per_call_site: bool = False,
    example_input: torch.Tensor | tuple | None = None,
    **kwargs,
) -> nn.Module:
    """Swap ``model``'s activation modules of the given types for DEU layers, in place.

    Each replaced module becomes a :class:`LazyDEU` with ``kwargs`` (for example
    ``init="relu"`` to start from the function being replaced, or ``dim=-1`` for
    channels-last activations such as a transformer's), so the number of neurons
    is read from the first input.

    A module object that the model calls at several places (torchvision's and
    MONAI's residual blocks call one ``relu`` twice) would share one set of
    coefficients between them, and fail if the places have different widths.
    The first forward pass warns when that happens. With ``per_call_site=True``
    it becomes a :class:`PerCallSite`, which gives each call site its own
    LazyDEU, without changing the model's ``forward``.

    ``example_input``: an input (or a tuple of positional inputs) for the dry
    run that sizes the lazy layers, done here by :func:`materialize`: in eval
    mode, without gradients, with BatchNorm's running statistics and every
    other buffer left as they were. Without it, run one forward pass yourself
    before creating the optimizer. Functional activations (``F.relu`` inside
    ``forward``) are not modules and are left alone.

    Returns ``model``.

    Example::

        >>> net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> net = deu.replace_activations(net, init="relu", example_input=torch.randn(4, 3))
        >>> net[1]
        DEU(8, dim=1, init='relu', epsilon=0.01, steepness=100.0, max_exponent=4, ...)
    """
    types = tuple(types)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise TypeError(f"types must be nn.Module subclasses, got {types!r}")
    replaced: dict[nn.Module, str] = {}
    done: dict[int, nn.Module] = {}
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, types):
                # A module object registered at several places stays one object.
                if id(child) not in done:
                    new: nn.Module = (
                        PerCallSite(lambda: LazyDEU(**kwargs))
                        if per_call_site
                        else LazyDEU(**kwargs)
                    )
                    done[id(child)] = new
                    replaced[new] = f"{parent_name}.{name}" if parent_name else name
                setattr(parent, name, done[id(child)])
    if per_call_site:
        sites = [m for m in replaced if isinstance(m, PerCallSite)]

        def start_pass(module, args):
            for site in sites:
                site._start_pass()

        model.register_forward_pre_hook(start_pass)
    elif replaced:
        _shared_call_sites(model, replaced)
    if example_input is not None:
        inputs = example_input if isinstance(example_input, tuple) else (example_input,)
        materialize(model, *inputs)
    return model
