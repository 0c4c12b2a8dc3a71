"""Train a small classifier with DEU (or ReLU) activations, on one or many processes.

    python -m deu.train --epochs 20
    torchrun --standalone --nproc_per_node 2 -m deu.train --epochs 20

Data: scikit-learn's bundled 8x8 digits (no download). Under ``torchrun`` every
process trains a DistributedDataParallel replica on its shard of each batch;
gradients, DEU coefficients included, are averaged across processes, so each
step is a step on the union of the processes' batches (DistributedSampler
shuffles and pads, so the run follows a single-process one in distribution, not
step for step). The model stays on the CPU and the processes talk over gloo.
Rank 0 prints the progress and the final test accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import deu


def load_digits(seed: int = 0, test_fraction: float = 0.25):
    """(train, test) TensorDatasets of scikit-learn's digits, standardised."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-3)
    x = (x - mean) / std
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def build_mlp(inputs: int, hidden: int, classes: int, activation: str) -> nn.Module:
    def act() -> nn.Module:
        return deu.DEU(hidden) if activation == "deu" else nn.ReLU()

    return nn.Sequential(nn.Linear(inputs, hidden), act(), nn.Linear(hidden, classes))


def _distributed() -> tuple[int, int]:
    """Join the process group torchrun describes; (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")  # the model and the data stay on the CPU
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train(args: argparse.Namespace) -> float:
    """Train; returns the test accuracy (the same on every rank)."""
    rank, world = _distributed()
    torch.manual_seed(args.seed)
    train_set, test_set = load_digits(args.seed)
    model = build_mlp(64, args.hidden, 10, args.activation)
    if world > 1:
        model = DistributedDataParallel(model)
    sampler: DistributedSampler | None = None
    if world > 1:
        sampler = DistributedSampler(train_set, world, rank, seed=args.seed)
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size // world,
        sampler=sampler,
        shuffle=sampler is None,
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        total = 0.0
        for x, y in loader:
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(x)
        if rank == 0:
            mean_loss = total / (len(train_set) / world)
            print(f"epoch {epoch + 1}/{args.epochs}  train loss {mean_loss:.4f}")
    with torch.no_grad():
        x, y = test_set.tensors
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    if rank == 0:
        print(f"test accuracy {accuracy:.4f} ({args.activation}, {world} process(es))")
    if world > 1:
        dist.destroy_process_group()
    return accuracy


def _exit_without_finalising() -> None:
    """End a distributed worker process without interpreter finalisation.

    With torch 2.13 a DistributedDataParallel model keeps the gloo group's worker
    threads running after destroy_process_group (ReLU models too; the group's
    Python object keeps 10 references that no Python object holds). If one of
    them releases a finished allreduce while the interpreter finalises, releasing
    it takes the GIL, the thread is made to exit, and the process aborts with
    "terminate called without an active exception" (seen in CI, and under gdb:
    ProcessGroupGloo::runLoop -> ~AsyncAllreduceWork -> ~ThreadLocalState ->
    gil_scoped_acquire during Py_FinalizeEx). Everything is done at this point,
    so the process leaves as a finished one would, without that race.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(prog="python -m deu.train", description=__doc__)
    parser.add_argument("--activation", choices=("deu", "relu"), default="deu")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    return train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _exit_without_finalising()
