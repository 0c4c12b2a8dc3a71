"""Smoke tests of the circles and fit experiments (``--quick``) and of ``make demo``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from deu.experiments.__main__ import main  # noqa: E402


def _check_png(path: Path) -> None:
    import matplotlib.image

    assert path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def _read_csv(path: Path) -> list[dict[str, str]]:
    assert path.stat().st_size > 0
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    return rows


def _numbers(rows: list[dict[str, str]], skip: tuple[str, ...] = ()) -> dict[str, list[float]]:
    """Every column that parses as numbers, checked finite."""
    columns: dict[str, list[float]] = {}
    for column in rows[0]:
        if column in skip:
            continue
        try:
            values = [float(row[column]) for row in rows]
        except ValueError:
            continue
        assert all(math.isfinite(v) for v in values), (column, values)
        columns[column] = values
    return columns


def _check_tables(out: Path, names: tuple[str, ...]) -> None:
    for name in names:
        markdown = (out / f"{name}.md").read_text()
        assert markdown.count("|") > 10, markdown
        _read_csv(out / f"{name}.csv")


def test_circles_quick(tmp_path: Path) -> None:
    summary = main(["circles", "--quick", "--out", str(tmp_path), "--threads", "1"])
    _check_tables(tmp_path, ("circles", "circles_runs"))
    rows = _read_csv(tmp_path / "circles.csv")
    labels = [row["model"] for row in rows]
    assert labels[0] == "DEU 1x2"
    assert {"Maxout 1x2 (3 pieces)", "ReLU 1x2", "ReLU 1x4", "ReLU 2x4"} <= set(labels)
    numbers = _numbers(rows)
    for column in ("test_acc_mean", "test_acc_min", "test_acc_max", "train_acc_mean"):
        assert all(0.0 <= v <= 1.0 for v in numbers[column]), column
    assert numbers["parameters"][0] == 2 * 2 + 2 + 2 * 5 + 2 + 1  # Linear, DEU, Linear
    runs = _numbers(_read_csv(tmp_path / "circles_runs.csv"))
    assert all(0.0 <= v <= 1.0 for v in runs["test_acc"] + runs["train_acc"])
    assert all(v >= 0.0 for v in runs["final_loss"])
    for name in (
        "circles_boundaries.png",
        "circles_boundaries_all_seeds.png",
        "circles_deu_activations.png",
    ):
        _check_png(tmp_path / name)
    assert "y = u(t)" in (tmp_path / "circles_deu_equations.txt").read_text()
    assert set(summary["models"]) == set(labels)
    for path in summary["files"]:
        assert Path(path).stat().st_size > 0


def test_fit_quick(tmp_path: Path) -> None:
    summary = main(["fit", "--quick", "--out", str(tmp_path), "--threads", "1"])
    _check_tables(tmp_path, ("fit", "fit_runs"))
    rows = _read_csv(tmp_path / "fit.csv")
    labels = [row["model"] for row in rows]
    assert labels[:5] == [
        "DEU 30",
        "DEU 30 (init=random)",
        "DEU 30 (paper)",
        "ReLU 250",
        "Maxout 250 (3 pieces)",
    ]
    numbers = _numbers(rows, skip=("changed_subspace",))
    for column in ("train_mse_mean", "grid_mse_mean", "grid_mse_min", "grid_mse_max"):
        assert all(v >= 0.0 for v in numbers[column]), column
    assert numbers["hidden_units"][:5] == [30, 30, 30, 250, 250]
    # 1->30 linear, 30 DEUs of 5 coefficients, 30->1 linear
    assert numbers["parameters"][:3] == [60 + 150 + 31] * 3
    assert numbers["parameters"][3] == 500 + 251
    run_rows = _read_csv(tmp_path / "fit_runs.csv")
    runs = _numbers(run_rows, skip=("changed_subspace", "relative_change"))
    assert all(v >= 0.0 for v in runs["train_mse"] + runs["grid_mse"])
    # The adaptation columns: a fraction and a relative change for DEU rows, NaN otherwise.
    for row in run_rows:
        changed, relative = float(row["changed_subspace"]), float(row["relative_change"])
        if row["model"].startswith("DEU"):
            assert 0.0 <= changed <= 1.0 and relative >= 0.0, row
        else:
            assert math.isnan(changed) and math.isnan(relative), row
    for name in (
        "fit_curves.png",
        "fit_curves_all_seeds.png",
        "fit_training.png",
        "fit_deu_activations.png",
    ):
        _check_png(tmp_path / name)
    assert len((tmp_path / "fit_deu_equations.txt").read_text().splitlines()) == 30
    assert set(summary["models"]) == set(labels)


def test_fit_target_matches_the_paper() -> None:
    import numpy as np

    from deu.experiments.fit import target

    t = np.array([0.0, np.pi])
    # t = 0: (0 - 1)/2 + 4(1 + pi/2)/3; t = pi: (0 - 1)/2 + 4(1 + 0)/3
    expected = [-0.5 + 4 * (1 + np.pi / 2) / 3, -0.5 + 4 / 3]
    assert np.allclose(target(t), expected)


def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deu.experiments import demo

    summary = demo.main(["--out", str(tmp_path)])
    printed = capsys.readouterr().out
    described = summary["describe"].splitlines()
    assert len(described) == 2 and all("y = u(t)" in line for line in described)
    assert summary["describe"] in printed
    assert "test accuracy" in printed
    assert summary["test_acc"] >= 0.9
    _check_png(tmp_path / "circles_boundary.png")
    gallery = sorted((tmp_path / "gallery").glob("*.png"))
    assert gallery
    for path in gallery:
        _check_png(path)
