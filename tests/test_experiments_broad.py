"""The ``broad`` experiment (``--quick``) and its adaptation measure."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("statsmodels")

import deu  # noqa: E402
from deu.experiments import broad  # noqa: E402
from deu.experiments.__main__ import main  # noqa: E402


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_adaptation_measures_subspace_changes_and_the_relative_change_on_the_probe():
    model = torch.nn.Sequential(torch.nn.Linear(1, 2), deu.DEU(2, init="relu", dtype=torch.float64))
    start = broad._deu_snapshot(model)
    # Neuron 0 becomes y'' + y = u(t) (its step response: 1 - cos t for t >= 0);
    # neuron 1 stays the ReLU ramp.
    model[1].coeffs = torch.tensor(
        [[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]], dtype=torch.float64
    )
    changed, relative = broad.adaptation(start, broad._deu_snapshot(model))
    assert changed == 0.5

    # Written by hand: on the probe the ramp is max(t, 0) and the oscillator 1 - cos t
    # for t >= 0 (both 0 before the step).
    t = np.linspace(-3.0, 3.0, 61)
    ramp = np.maximum(t, 0.0)
    oscillator = np.where(t >= 0, 1.0 - np.cos(t), 0.0)
    first = np.linalg.norm(oscillator - ramp) / np.linalg.norm(ramp)
    # The median of two neurons is their mean: the unchanged neuron contributes 0
    # up to the symlog weight's rounding.
    assert relative == pytest.approx(first / 2, rel=1e-6)


def test_adaptation_is_nan_without_a_deu():
    model = torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.ReLU())
    assert all(math.isnan(v) for v in broad.adaptation(broad._deu_snapshot(model), []))


def test_broad_quick_compares_every_activation_with_relu(tmp_path: Path) -> None:
    summary = main(["broad", "--quick", "--out", str(tmp_path), "--threads", "1"])
    runs = _read_csv(tmp_path / "broad_runs.csv")
    assert {r["task"] for r in runs} == {"sunspots", "cancer"}
    assert {r["activation"] for r in runs} == {"ReLU", "DEU"}
    assert {r["optimiser"] for r in runs} == {"AdamW", "SGD"}
    for run in runs:
        assert run["finite"] in ("True", "False")
        if run["finite"] == "True":
            assert float(run["spike"]) >= 1.0 and math.isfinite(float(run["test"]))
        if run["activation"] == "DEU":
            assert 0.0 <= float(run["changed subspace"]) <= 1.0
            assert float(run["relative change"]) >= 0.0
        else:
            assert run["changed subspace"] == "nan"
    rows = _read_csv(tmp_path / "broad.csv")
    assert len(rows) == len(summary["summary"]) == 4
    for row in rows:
        finite, total = (int(v) for v in row["runs finite"].split("/"))
        assert 0 <= finite <= total == 2
        if row["activation"] == "ReLU":
            assert row["vs ReLU"] == "-" and row["x ReLU's worst"] == "1"
    for name in ("broad.md", "broad_runs.md", "broad_settings.md"):
        assert (tmp_path / name).read_text().count("|") > 10


def test_the_grid_is_the_same_for_every_activation():
    # One protocol: AdamW 1e-3..1e-2 and SGD with momentum 0.01..0.1, 3 seeds.
    assert broad.OPTIMISERS == (
        ("AdamW", 1e-3),
        ("AdamW", 3e-3),
        ("AdamW", 1e-2),
        ("SGD", 0.01),
        ("SGD", 0.03),
        ("SGD", 0.1),
    )
    assert broad.SEEDS == 3
    assert broad.ACTIVATIONS["DEU"] == {}  # the layer's defaults, nothing tuned
