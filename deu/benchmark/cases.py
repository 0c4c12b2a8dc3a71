"""The CPU cases: activation cases and training cases."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial

import torch
import torch.nn.functional as nnf
from torch import nn

from deu import functional
from deu._autograd import deu_forward
from deu._parametrisation import coefficients_from_weight
from deu._subspaces import SUBSPACE_NAMES
from deu.benchmark.baselines import masked_every_subspace, per_neuron_loop
from deu.benchmark.measurement import Settings, Workload
from deu.benchmark.populations import mixed_population, subspace_population
from deu.module import DEU

# Activation cases


def activation_workload(
    group: str,
    case: str,
    path: str,
    apply: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    parameters: Sequence[torch.Tensor] = (),
    *,
    scale: float = 1.0,
    optional: bool = False,
) -> Workload:
    """fwd+bwd: ``apply(x)`` and its gradients in x and ``parameters`` for a fixed
    random output gradient.  Inference: ``apply(x)`` under inference mode."""
    x_grad = x.detach().clone().requires_grad_()
    inputs = [x_grad, *parameters]
    grad_output = torch.randn_like(x)

    def train_step():
        return torch.autograd.grad(apply(x_grad), inputs, grad_output)

    def inference_step():
        with torch.inference_mode():
            return apply(x)

    return Workload(group, case, path, train_step, inference_step, scale, optional)


def _shape_name(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def reference_workloads(x: torch.Tensor, group: str) -> Iterator[Workload]:
    """ReLU, PReLU (one learned weight per neuron) and one torch.exp (inference only)."""
    weight = torch.full((x.shape[1],), 0.25, device=x.device, requires_grad=True)
    yield activation_workload(group, group, "ReLU", torch.relu, x)
    yield activation_workload(group, group, "PReLU", lambda t: nnf.prelu(t, weight), x, [weight])

    def exp_step():
        with torch.inference_mode():
            return torch.exp(x)

    yield Workload(group, group, "torch.exp", None, exp_step)


def deu_workloads(
    x: torch.Tensor, coeffs: torch.Tensor, group: str, case: str, settings: Settings
) -> Iterator[Workload]:
    """The DEU paths, gravitation on: the default (backend="auto": the fused
    CPU kernel on the CPU), the generated PyTorch kernels eager, and their
    torch.compile."""
    c = coeffs.detach().clone().requires_grad_()
    if x.device.type == "cpu":
        yield activation_workload(
            group, case, DEFAULT_PATH, lambda t: functional.deu(t, c), x, [c], optional=True
        )
    yield activation_workload(
        group, case, TORCH_PATH, lambda t: functional.deu(t, c, backend="torch"), x, [c]
    )
    compiled = torch.compile(functional.deu, backend=settings.compile_backend)
    yield activation_workload(
        group,
        case,
        # torch.compile sees the custom operator whole: the generated kernels inside it
        # run eagerly (the in-operator compiled path is IN_OPERATOR_PATH, GPU section).
        f"DEU operator under torch.compile ({settings.compile_backend})",
        lambda t: compiled(t, c, backend="torch"),
        x,
        [c],
        optional=True,
    )


# The two DEU paths the targets are about.
DEFAULT_PATH = "DEU default (fused CPU kernel)"
TORCH_PATH = "DEU generated PyTorch, eager"


def baseline_workloads(
    x: torch.Tensor, coeffs: torch.Tensor, group: str, case: str, settings: Settings
) -> Iterator[Workload]:
    """The runtime without gravitation (what the baselines compute), the masked
    Algorithm 1 and the per-neuron loop (on a subset of the neurons)."""
    c = coeffs.detach().clone().requires_grad_()
    if x.device.type == "cpu":
        yield activation_workload(
            group,
            case,
            f"{DEFAULT_PATH}, no gravitation",
            lambda t: functional.deu(t, c, gravitation=False),
            x,
            [c],
            optional=True,
        )
    yield activation_workload(
        group,
        case,
        f"{TORCH_PATH}, no gravitation",
        lambda t: functional.deu(t, c, gravitation=False, backend="torch"),
        x,
        [c],
    )
    yield activation_workload(
        group, case, "masked Algorithm 1 (baseline)", lambda t: masked_every_subspace(t, c), x, [c]
    )
    neurons = x.shape[1]
    subset = min(neurons, settings.loop_neurons)
    x_subset = x.narrow(1, 0, subset).contiguous()
    c_subset = coeffs[:subset].detach().clone().requires_grad_()
    label = "per-neuron loop (baseline)"
    if subset < neurons:
        label = f"per-neuron loop (baseline; {subset} of {neurons} neurons, x{neurons / subset:g})"
    yield activation_workload(
        group,
        case,
        label,
        lambda t: per_neuron_loop(t, c_subset),
        x_subset,
        [c_subset],
        scale=neurons / subset,
    )


def activation_workloads(settings: Settings) -> Iterator[Workload]:
    generator = torch.Generator().manual_seed(0)
    dtype, device = torch.float32, settings.device
    for shape in settings.activation_shapes:
        group = _shape_name(shape)
        x = torch.randn(shape, generator=generator).to(device, dtype)
        yield from reference_workloads(x, group)
        neurons = shape[1]
        mixed = mixed_population(neurons, generator).to(device, dtype)
        yield from deu_workloads(x, mixed, group, f"{group} mixed", settings)
        yield from baseline_workloads(x, mixed, group, f"{group} mixed", settings)
        for name in SUBSPACE_NAMES:
            coeffs = subspace_population(name, neurons, generator).to(device, dtype)
            yield from deu_workloads(x, coeffs, group, f"{group} {name}", settings)


# Layer cases: small shapes, where the per-call cost is most of the time


def layer_workloads(settings: Settings) -> Iterator[Workload]:
    """A layer as a model calls it (the module, its parameters' gradients) on each
    small shape: ReLU, PReLU, torch.exp (inference), deu.DEU from its default ReLU
    start and on the mixed population, and the mixed layer through the custom
    operator with the traced parametrisation: the path every eager call took
    before the eager path (what torch.compile still traces)."""
    generator = torch.Generator().manual_seed(1)
    for shape in settings.layer_shapes:
        group = f"layer {_shape_name(shape)}"
        x = torch.randn(shape, generator=generator).to(settings.device)
        relu, prelu = nn.ReLU(), nn.PReLU(shape[1]).to(settings.device)
        yield activation_workload(group, group, "ReLU", relu, x)
        yield activation_workload(group, group, "PReLU", prelu, x, [prelu.weight])

        def exp_step(x=x):
            with torch.inference_mode():
                return torch.exp(x)

        yield Workload(group, group, "torch.exp", None, exp_step)
        start: DEU = DEU(shape[1]).to(settings.device)
        yield activation_workload(
            group, group, "DEU layer, ReLU start (default)", start, x, [start.weight]
        )
        mixed = DEU(
            shape[1], init=mixed_population(shape[1], torch.Generator().manual_seed(shape[1]))
        ).to(settings.device)
        yield activation_workload(group, f"{group} mixed", "DEU layer", mixed, x, [mixed.weight])
        yield activation_workload(
            group,
            f"{group} mixed",
            "DEU layer through the operator (no eager path)",
            partial(_through_the_operator, mixed),
            x,
            [mixed.weight],
        )


def _through_the_operator(layer: DEU, x: torch.Tensor) -> torch.Tensor:
    coeffs = coefficients_from_weight(layer.weight, layer.coefficient_scale, layer.parametrisation)
    return deu_forward(
        x,
        coeffs,
        layer.dim,
        layer.epsilon,
        layer.steepness,
        layer.max_exponent,
        layer.max_value,
        functional.gravitation_rule(layer.gravitation),
        layer.critical,
        functional.resolve_backend(layer.backend, x.device),
    )


# Training cases


ActivationFactory = Callable[[int], nn.Module]


def _deu_activation(channels: int, backend: str = "auto") -> nn.Module:
    generator = torch.Generator().manual_seed(channels)
    return DEU(channels, init=mixed_population(channels, generator).float(), backend=backend)


def _deu_torch_activation(channels: int) -> nn.Module:
    return _deu_activation(channels, backend="torch")


ACTIVATIONS: dict[str, ActivationFactory] = {
    "ReLU": lambda channels: nn.ReLU(),
    "PReLU": lambda channels: nn.PReLU(channels),
    "DEU": _deu_activation,
    "DEU (generated PyTorch kernels)": _deu_torch_activation,
}


def mlp(widths: Sequence[int], activation: ActivationFactory) -> nn.Sequential:
    """Linear layers of the given widths, an activation after each hidden one."""
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nn.Linear(width_in, width_out))
        if i < len(widths) - 2:
            layers.append(activation(width_out))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, an activation after each, with a
    1x1 projection on the shortcut when the shape changes."""

    def __init__(self, width_in: int, width_out: int, stride: int, activation: ActivationFactory):
        super().__init__()
        self.conv1 = nn.Conv2d(width_in, width_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width_out)
        self.act1 = activation(width_out)
        self.conv2 = nn.Conv2d(width_out, width_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width_out)
        self.act2 = activation(width_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or width_in != width_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(width_in, width_out, 1, stride, bias=False), nn.BatchNorm2d(width_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(y)) + self.shortcut(x))


def stunted_resnet(widths: tuple[int, int], activation: ActivationFactory) -> nn.Sequential:
    """The paper's stunted ResNet-18: CIFAR ResNet-18 without its 256- and
    512-wide stages (678k parameters with ReLU at widths (64, 128))."""
    narrow, wide = widths
    return nn.Sequential(
        nn.Conv2d(3, narrow, 3, 1, 1, bias=False),
        nn.BatchNorm2d(narrow),
        activation(narrow),
        BasicBlock(narrow, narrow, 1, activation),
        BasicBlock(narrow, narrow, 1, activation),
        BasicBlock(narrow, wide, 2, activation),
        BasicBlock(wide, wide, 1, activation),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(wide, 10),
    )


def calibrate_batch_norm(model: nn.Module, inputs: torch.Tensor) -> None:
    """Set every batch norm's running statistics to those of ``inputs``.

    An untrained network's running statistics (mean 0, variance 1) would leave
    eval mode's activations unnormalised, growing layer by layer to thousands,
    which is not what a trained network's inference sees.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: after one batch, that batch's statistics
    model.train()
    with torch.no_grad():
        model(inputs)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


def training_workload(
    group: str, path: str, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
) -> Workload:
    """fwd+bwd: one SGD step (forward, cross-entropy, backward, update).
    Inference: the forward pass in eval mode under inference mode.

    The learning rate is 0, so that every timed step sees the same weights and
    DEU coefficients (the update's arithmetic still runs): the DEU's cost
    depends on which subspaces its neurons are in.
    """
    calibrate_batch_norm(model, inputs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        nnf.cross_entropy(model(inputs), labels).backward()
        optimizer.step()

    def inference_step():
        model.eval()
        with torch.inference_mode():
            return model(inputs)

    return Workload(group, group, path, train_step, inference_step)


def training_workloads(settings: Settings) -> Iterator[Workload]:
    generator = torch.Generator().manual_seed(1)
    device = settings.device
    widths = "-".join(map(str, settings.mlp_widths))
    size = settings.image_size
    networks = (
        (
            f"MLP {widths}, batch {settings.mlp_batch}",
            lambda activation: mlp(settings.mlp_widths, activation),
            (settings.mlp_batch, settings.mlp_widths[0]),
        ),
        (
            f"stunted ResNet-18 {size}x{size}, batch {settings.conv_batch}",
            lambda activation: stunted_resnet(settings.conv_widths, activation),
            (settings.conv_batch, 3, size, size),
        ),
    )
    for group, build, input_shape in networks:
        inputs = torch.randn(input_shape, generator=generator).to(device)
        labels = torch.randint(0, 10, (input_shape[0],), generator=generator).to(device)
        for path, activation in ACTIVATIONS.items():
            torch.manual_seed(0)  # the same weights for every activation
            model = build(activation).to(device)
            yield training_workload(group, path, model, inputs, labels)
