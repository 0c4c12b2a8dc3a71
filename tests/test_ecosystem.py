"""DEUs inside the PyTorch ecosystem: lazy layers, conversion, DDP, compile, export, packaging."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import deu

ROOT = Path(__file__).resolve().parent.parent


# --- lazy layers and conversion -------------------------------------------------


def test_lazy_deu_infers_num_neurons_and_becomes_a_deu():
    layer = deu.LazyDEU(init="relu")
    assert layer.has_uninitialized_params()
    x = torch.randn(3, 6, 4, 4)
    y = layer(x)
    assert type(layer) is deu.DEU and layer.num_neurons == 6
    assert layer.coeffs.shape == (6, 5)
    # The ReLU start is y = ReLU(t) / b with b = 1 to one rounding of the symlog
    # weight (1 + 1.2e-7 in float32).
    b = layer.coeffs[:, 1].detach()
    assert torch.all((b - 1).abs() <= 2**-23)
    torch.testing.assert_close(y, torch.relu(x) / b.reshape(1, 6, 1, 1))
    channels_last = deu.LazyDEU(dim=-1)
    channels_last(torch.randn(2, 5, 9))
    assert channels_last.coeffs.shape == (9, 5)


def test_lazy_deu_rejects_what_it_cannot_infer():
    with pytest.raises(ValueError, match="not a tensor"):
        deu.LazyDEU(init=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="cannot infer num_neurons"):
        deu.LazyDEU(dim=3)(torch.randn(2, 4))


class BasicBlock(nn.Module):
    """The residual block of torchvision's ResNet-18, written here (no download)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def small_resnet(classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        BasicBlock(16, 16),
        BasicBlock(16, 32, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, classes),
    )


def test_replace_activations_converts_a_resnet_in_place():
    torch.manual_seed(0)
    reference = small_resnet()
    torch.manual_seed(0)
    model = small_resnet()
    returned = deu.replace_activations(model, init="relu")
    assert returned is model
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    x = torch.randn(4, 3, 16, 16)
    # The dry run infers the widths; init="relu" starts from the replaced function,
    # so it gives the ReLU network's output (both in training mode: batch statistics).
    assert torch.allclose(model(x), reference(x), atol=1e-6)
    widths = sorted(m.num_neurons for m in model.modules() if isinstance(m, deu.DEU))
    assert widths == [16, 16, 32]  # stem, block 1, block 2 (each block's relu is shared)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimiser.step()
    assert all(m.weight.grad is not None for m in model.modules() if isinstance(m, deu.DEU))


def test_a_shared_activation_module_warns_and_per_call_site_separates_it():
    """BasicBlock calls one relu twice: by default the two places share one DEU
    and the first forward pass says so; per_call_site=True gives each call its
    own coefficients (and the two may then differ), without touching forward."""
    torch.manual_seed(0)
    model = deu.replace_activations(small_resnet(), init="relu")
    with pytest.warns(UserWarning, match=r"'3.relu' is called at 2 places .* per_call_site=True"):
        model(torch.randn(2, 3, 16, 16))
    torch.manual_seed(0)
    reference = small_resnet()
    torch.manual_seed(0)
    model = deu.replace_activations(small_resnet(), init="relu", per_call_site=True)
    x = torch.randn(4, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.allclose(model(x), reference(x), atol=1e-6)
    sites = model[3].relu
    assert isinstance(sites, deu.PerCallSite) and len(sites.sites) == 2
    widths = sorted(m.num_neurons for m in model.modules() if isinstance(m, deu.DEU))
    assert widths == [16, 16, 16, 32, 32]  # stem, block 1 twice, block 2 twice
    # Each call site is used by its own call: changing the second one's
    # coefficients changes the output, and its gradient is its own.
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    first, second = sites.sites[0].weight.grad, sites.sites[1].weight.grad
    assert first is not None and second is not None and not torch.equal(first, second)
    before = model(x)
    sites.sites[1].coeffs = torch.tensor([0.0, 0.5, 0.0, 0.0, 0.0]).expand(16, 5)
    assert not torch.allclose(model(x), before)


def test_the_dry_run_of_an_example_input_has_no_side_effects():
    """example_input: the library sizes the lazy layers itself, in eval mode and
    without gradients; BatchNorm's running statistics and the training flags are
    as before (a user's own dry run in training mode would update them)."""
    torch.manual_seed(0)
    model = small_resnet()
    model[3].train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    deu.replace_activations(
        model, init="relu", per_call_site=True, example_input=torch.randn(8, 3, 16, 16) * 5
    )
    assert all(m.training for m in model.modules())
    for name, value in state.items():
        assert torch.equal(model.state_dict()[name], value), name
    assert all(m.num_neurons > 0 for m in model.modules() if isinstance(m, deu.DEU))
    assert not any(p.grad is not None for p in model.parameters())
    # The same dry run by hand on any model.
    net = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), deu.LazyDEU())
    deu.materialize(net, torch.randn(5, 3))
    assert net[2].num_neurons == 6 and net[1].num_batches_tracked.item() == 0 and net.training


def test_diverged_coefficients_say_so_and_what_to_change():
    """A coefficient that training made non-finite or too large to classify is a
    CoefficientsDiverged (a ValueError) that says what to change, not the
    operator's "rescale them"."""
    layer = deu.DEU(3)
    with torch.no_grad():
        layer.weight[1, 0] = float("inf")
    with pytest.raises(
        deu.CoefficientsDiverged,
        match=r"diverged during training .* 1 of 3 neurons non-finite\). .*lower the learning rate, clip the gradient norm",
    ):
        layer(torch.randn(2, 3))
    layer = deu.DEU(2, parametrisation="linear", coefficient_scale=1.0)
    layer.coeffs = torch.tensor([[1e20, 1e20, 1e20, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"diverged during training .*fall in no subspace"):
        layer(torch.randn(2, 2))
    # Bad input is still the operator's own error, not a divergence.
    with pytest.raises(ValueError, match="input has 4 neurons") as info:
        layer(torch.randn(2, 4))
    assert not isinstance(info.value, deu.CoefficientsDiverged)


def test_replace_activations_rejects_non_module_types():
    with pytest.raises(TypeError, match="nn.Module subclasses"):
        deu.replace_activations(nn.ReLU(), types=(torch.relu,))


# --- distributed training ---------------------------------------------------------


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), deu.DEU(6), nn.Linear(6, 1)).double()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randn(
        8, 1, generator=g, dtype=torch.float64
    )


STEPS = 3


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(STEPS):
        optimiser.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimiser.step()


def _ddp_worker(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    x, y = _batch()
    shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    model = DistributedDataParallel(_model())
    _train(model, x[shard], y[shard])
    torch.save(model.module[1].coeffs.detach(), f"{out}/rank{rank}.pt")
    dist.destroy_process_group()
    # Without interpreter finalisation, where torch 2.13's gloo threads, which DDP
    # keeps alive, can abort the process (see deu.train._exit_without_finalising).
    from deu.train import _exit_without_finalising

    _exit_without_finalising()


def test_ddp_ranks_agree_with_each_other_and_with_one_process_on_the_full_batch(tmp_path):
    world = 2
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    single = _model()
    _train(single, *_batch())
    assert torch.equal(ranks[0], ranks[1])
    assert not torch.equal(ranks[0], _model()[1].coeffs.detach())  # training moved them
    # DDP averages the two half-batch gradients: equal to the full-batch mean up to rounding.
    assert torch.allclose(ranks[0], single[1].coeffs.detach(), rtol=1e-12, atol=1e-14)


def _rank_logs(log_dir: Path) -> str:
    """Every rank's stdout and stderr that torchrun redirected under ``log_dir``."""
    parts = []
    for log in sorted(log_dir.rglob("*.log")):
        parts.append(f"--- {log.relative_to(log_dir)} ---\n{log.read_text(errors='replace')}")
    return "\n".join(parts) or "(no rank logs were written)"


def _gloo_threads_after_destroy(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(3, 2), nn.ReLU()))
    model(torch.randn(4, 3)).sum().backward()
    del model
    dist.destroy_process_group()
    names = [
        Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task")
    ]
    Path(out, f"rank{rank}.txt").write_text(" ".join(n for n in names if "gloo" in n))
    from deu.train import _exit_without_finalising

    _exit_without_finalising()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_ddp_still_leaves_gloo_threads_running_after_destroy_process_group(tmp_path):
    # Why deu.train's workers (and the DDP test's) leave without interpreter
    # finalisation: these threads, still running then, can abort the process. If a
    # torch release stops them, this fails, and the workaround can go.
    mp.spawn(
        _gloo_threads_after_destroy, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2
    )
    for rank in range(2):
        assert "pt_gloo_runloop" in (tmp_path / f"rank{rank}.txt").read_text()


def test_the_training_entry_point_runs_under_torchrun(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            # Each rank's output goes to its own file, so a failure shows what the
            # rank that failed printed, not only torchrun's summary of it.
            "--log-dir",
            str(tmp_path),
            "--redirects",
            "3",
            "-m",
            "deu.train",
            "--epochs",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        # A rank that aborts (a C++ terminate, a fatal Python error) prints its Python stack.
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    logs = _rank_logs(tmp_path)
    assert result.returncode == 0, f"{result.stderr[-2000:]}\n{logs}"
    assert "test accuracy" in logs and "(deu, 2 process(es))" in logs, logs


# --- compile, export, mixed precision ----------------------------------------------


def _mixed_model() -> nn.Module:
    torch.manual_seed(0)
    coeffs = torch.tensor(
        [
            [1.0, 0.3, 1.2, 0.1, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0, 0.0],
            [1.0, 2.0, 0.5, 0.0, 0.2],
            [0.0, 0.7, 0.4, 0.2, 0.0],
        ]
    )
    return nn.Sequential(nn.Linear(4, 6), deu.DEU(6, init=coeffs), nn.Linear(6, 2))


def test_compile_without_graph_breaks_matches_eager_in_training_and_inference():
    model = _mixed_model()
    compiled = torch.compile(model, fullgraph=True)  # fails on any graph break
    x = torch.randn(16, 4)
    y = compiled(x)
    assert torch.allclose(y, model(x), rtol=1e-6, atol=1e-6)
    y.square().sum().backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).square().sum().backward()
    for compiled_grad, p in zip(compiled_grads, model.parameters(), strict=True):
        assert torch.allclose(compiled_grad, p.grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", ["channels_last", "permuted"])
def test_compile_keeps_the_memory_layout_of_the_input(layout):
    """The operators' fake kernels promise the input's strides; the real ones keep them."""
    torch.manual_seed(0)
    coeffs = torch.tensor([[1.0, 0.3, 1.2, 0.1, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]]).repeat(4, 1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), deu.DEU(8, init=coeffs))
    x = torch.randn(2, 3, 6, 6)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    else:
        x = torch.randn(6, 6, 3, 2).permute(3, 2, 0, 1)
    compiled = torch.compile(model, fullgraph=True)
    y = compiled(x)
    y.square().sum().backward()
    assert torch.allclose(y, model(x), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(model[1].weight.grad).all()


def test_the_operator_passes_torch_library_opcheck():
    from deu._autograd import deu_forward

    coeffs = torch.tensor(
        [[1.0, 0.3, 1.2, 0.1, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]], dtype=torch.float64
    )
    for x in (torch.randn(3, 2, dtype=torch.float64), torch.randn(2, 2, 3, dtype=torch.float64)):
        args = (
            x.requires_grad_(),
            coeffs.clone().requires_grad_(),
            1,
            0.01,
            100.0,
            4.0,
            1000.0,
            "derived",
            "nearest",
            "torch",
        )
        torch.library.opcheck(deu_forward, args)


def test_export_in_eval_mode_matches_eager():
    model = _mixed_model().eval()
    x = torch.randn(16, 4)
    program = torch.export.export(model, (x,))
    assert "deu.forward" in str(program.graph)
    assert torch.allclose(program.module()(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 autocast needs a CUDA device")
def test_float16_autocast_on_a_gpu_stays_finite():
    model = _mixed_model().cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        y = model(torch.randn(16, 4, device="cuda"))
    y.float().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(model[1].weight.grad).all()


# --- packaging ------------------------------------------------------------------------


def test_the_wheel_installs_outside_the_checkout_and_runs(tmp_path):
    """Build the wheel, install it alone into a fresh venv, use it from elsewhere.

    torch is not reinstalled (that is `make test-install`): the fresh venv sees the
    test environment's site-packages through a path file, which does not
    activate the editable install of deu living there.
    """
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("deu-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
        check=True,
        capture_output=True,
    )
    Path(site, "torch_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = (
        "import pathlib, torch, deu, deu._generated as g\n"
        "assert pathlib.Path(deu.__file__).is_relative_to(pathlib.Path(__import__('sys').prefix)), deu.__file__\n"
        "assert (pathlib.Path(g.__file__).parent / 'SOLUTIONS.md').exists()\n"
        "assert (pathlib.Path(deu.__file__).parent / 'py.typed').exists()\n"
        "layer = deu.DEU(5)\n"
        "x = torch.randn(3, 5, requires_grad=True)\n"
        "layer(x).sum().backward()\n"
        "assert torch.isfinite(layer.weight.grad).all() and x.grad.shape == (3, 5)\n"
        "print('ok', deu.__file__)\n"
    )
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    result = subprocess.run(
        [str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True, env=clean_env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok " + str(env_dir))
