"""The ``stability`` and ``ablation`` experiments (``--quick``) and their measurements."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("matplotlib")

import deu  # noqa: E402
from deu.experiments import stability  # noqa: E402
from deu.experiments.__main__ import main  # noqa: E402


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_stability_quick_runs_every_activation_on_both_models(tmp_path: Path) -> None:
    summary = main(["stability", "--quick", "--out", str(tmp_path)])
    runs = _read_csv(tmp_path / "stability_runs.csv")
    assert {r["activation"] for r in runs} == set(stability.ACTIVATIONS)
    assert {r["model"] for r in runs} == {"digits", "regression"}
    for run in runs:
        if run["finite"] == "True":
            assert math.isfinite(float(run["metric"])) and float(run["spike"]) >= 1.0
    rows = _read_csv(tmp_path / "stability.csv")
    assert len(rows) == 2 * len(stability.ACTIVATIONS) == len(summary["summary"])
    diagnosis = _read_csv(tmp_path / "stability_diagnosis.csv")
    assert {r["coefficient"] for r in diagnosis} == {"a", "b", "c", "c1", "c2"}
    assert {r["activation"] for r in diagnosis} == {"DEU", "DEU (paper)"}
    for name in ("stability_spikes.png", "stability_diagnosis.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_ablation_quick_writes_its_table(tmp_path: Path) -> None:
    main(["ablation", "--quick", "--out", str(tmp_path)])
    rows = _read_csv(tmp_path / "ablation.csv")
    assert {r["model"] for r in rows} == {"digits", "regression"}
    assert all(r["runs finite"].count("/") == 1 for r in rows)


def _tiny_task(x, y, classification: bool, epochs: int = 20) -> stability.Task:
    return stability.Task("tiny", x, y, x, y, (x.shape[1], 4, y.shape[-1] if y.dim() > 1 else 2),
                          8, epochs, classification)  # fmt: skip


def test_a_run_records_its_spike_and_whether_it_improved() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    y = x[:, :1] * 2.0
    task = _tiny_task(x, y, classification=False)
    result = stability.train_run(task, lambda w: nn.ReLU(), "Adam", 1e-2, seed=0)
    assert result["finite"] and result["improved"]
    assert result["spike"] >= 1.0 and result["steps"] == 20 * 4
    # A learning rate that blows the regression up: not finite, never improved.
    blown = stability.train_run(task, lambda w: nn.ReLU(), "SGD", 1e6, seed=0)
    assert not blown["finite"] and not blown["improved"] and math.isnan(blown["metric"])


def test_a_run_whose_deu_refuses_its_coefficients_counts_as_diverged() -> None:
    """A DEU whose coefficients diverged raises a ValueError in its forward; the
    run records that as not finite instead of crashing the grid."""
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    task = _tiny_task(x, x[:, :1], classification=False)

    def broken(width: int) -> nn.Module:
        layer = deu.DEU(width)
        layer.coeffs = torch.full((width, 5), float("inf"))
        return layer

    result = stability.train_run(task, broken, "Adam", 1e-3, seed=0)
    assert not result["finite"] and result["steps"] == 0


def test_the_summary_counts_runs_where_relu_improves() -> None:
    runs = []
    for activation, improved in (("ReLU", [True, True]), ("DEU", [True, False])):
        for seed, ok in enumerate(improved):
            runs.append(
                {"model": "digits", "activation": activation, "optimiser": "Adam", "lr": 1e-3,
                 "seed": seed, "finite": True, "spike": 1.0 + seed, "improved": ok,
                 "metric": 90.0 + seed, "steps": 10}
            )  # fmt: skip
    rows = {r["activation"]: r for r in stability.summary_table(runs)}
    assert rows["ReLU"]["improving where ReLU improves"] == "2/2"
    assert rows["DEU"]["improving where ReLU improves"] == "1/2"
    assert rows["DEU"]["worst spike"] == "2"
    assert rows["DEU"]["best setting"] == "Adam 0.001"
