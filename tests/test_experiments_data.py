"""The data experiments (diabetes, digits, timing) and the IDX reader behind ``--data``."""

from __future__ import annotations

import csv
import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
pytest.importorskip("tqdm")

from deu.experiments import idx  # noqa: E402
from deu.experiments.__main__ import main  # noqa: E402


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, f"{path} has no rows"
    return rows


def numbers(rows: list[dict[str, str]], column: str) -> list[float]:
    values = [float(row[column]) for row in rows]
    assert all(math.isfinite(v) for v in values), f"{column}: {values}"
    return values


def check_outputs(out: Path, name: str, figures: list[str]) -> list[dict[str, str]]:
    import matplotlib.image as mpimg

    for suffix in ("csv", "md"):
        path = out / f"{name}.{suffix}"
        assert path.is_file() and path.stat().st_size > 0, path
    for figure in figures:
        path = out / figure
        assert path.is_file() and path.stat().st_size > 0, path
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    return read_csv(out / f"{name}.csv")


# --- quick runs -------------------------------------------------------------------------


def test_diabetes_quick(tmp_path):
    summary = main(["diabetes", "--quick", "--out", str(tmp_path)])
    rows = check_outputs(tmp_path, "diabetes", ["diabetes_width.png", "diabetes_convergence.png"])
    activations = {row["activation"] for row in rows}
    assert {"DEU", "ReLU", "LeakyReLU", "SELU", "Swish", "Maxout"} <= activations
    assert all(v >= 0 for v in numbers(rows, "test_mse_mean"))
    assert all(v >= 0 for v in numbers(rows, "test_rse_mean"))
    assert all(v >= 0 for v in numbers(rows, "train_mse_mean"))
    assert all(v > 0 for v in numbers(rows, "params"))
    # Least squares on the training folds: below 1 (predicting the training
    # mean, in standardised units, gives exactly 1), above 0 (not an exact fit).
    linear = next(row for row in rows if row["activation"] == "linear (least squares)")
    assert 0 < float(linear["train_mse_mean"]) < 1
    assert len(summary["rows"]) == len(rows)


def test_digits_quick(tmp_path):
    summary = main(["digits", "--quick", "--out", str(tmp_path)])
    rows = check_outputs(tmp_path, "digits", ["digits_accuracy.png", "digits_convergence.png"])
    models = [row["model"] for row in rows]
    for model in ("MLP", "CNN"):
        for name in ("ReLU", "SELU", "PReLU", "DEU", "Maxout"):
            assert f"{model}-{name}" in models
    assert all(0 <= v <= 1 for v in numbers(rows, "test_acc_mean"))
    params = dict(zip(models, numbers(rows, "params"), strict=True))
    # DEU adds five coefficients per hidden neuron, PReLU one, Maxout a second affine map.
    assert params["MLP-ReLU"] < params["MLP-PReLU"] < params["MLP-DEU"] < params["MLP-Maxout"]
    assert "digits" in summary["dataset"]


def test_timing_quick(tmp_path):
    summary = main(["timing", "--quick", "--out", str(tmp_path)])
    rows = check_outputs(tmp_path, "timing", ["timing_ms.png"])
    for name in ("DEU", "Maxout", "PReLU", "ReLU"):
        assert all(v > 0 for v in numbers(rows, f"{name}_ms"))
    assert numbers(rows, "paper_DEU_ms") == [47.0, 49.0]  # widths 16 and 64 of Table 4
    assert summary["threads"] >= 1


# --- IDX files --------------------------------------------------------------------------


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_idx_reads_a_hand_written_ubyte_file(tmp_path):
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(0x08, (2, 3, 4), bytes(range(24))))
    array = idx.read_idx(path)
    assert array.dtype == np.uint8 and array.shape == (2, 3, 4)
    np.testing.assert_array_equal(array.ravel(), np.arange(24))


def test_idx_is_big_endian(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(0x0B, (2,), b"\x01\x02\xff\xfe"))
    np.testing.assert_array_equal(idx.read_idx(path), [258, -2])
    path.write_bytes(idx_bytes(0x0D, (1,), struct.pack(">f", 1.5)))
    assert idx.read_idx(path).tolist() == [1.5]


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 5, 2)) * 50).astype(dtype)
    path = idx.write_idx(tmp_path / f"x-idx3{suffix}", array)
    back = idx.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "bad magic number: expected the first two bytes"),
        (idx_bytes(0x07, (1,), b"\x00"), "unknown IDX type code 0x07"),
        (idx_bytes(0x0A, (1,), b"\x00"), "unknown IDX type code 0x0A"),
        (idx_bytes(0x08, (2, 3), bytes(5)), "truncated payload: .* needs 6 bytes .* found 5"),
        (idx_bytes(0x0C, (2,), bytes(9)), "1 trailing bytes: .* needs 8 bytes .* found 9"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header: 3 dimensions need 16"),
        (b"\x00\x00", "expected a 4-byte IDX header, found only 2"),
    ],
)
def test_idx_rejects_malformed_files(tmp_path, data, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as caught:
        idx.read_idx(path)
    assert str(path) in str(caught.value)


def test_idx_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere-idx1-ubyte"
    with pytest.raises(ValueError, match="not found") as caught:
        idx.read_idx(missing)
    assert str(missing) in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        idx.load_mnist(tmp_path)


def test_idx_bad_gzip(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="gzip"):
        idx.read_idx(path)


def write_mnist(folder: Path, n_train: int = 60, n_test: int = 20, size: int = 28, **overrides):
    """A tiny MNIST-style folder; ``overrides`` replaces a file's array by name."""
    rng = np.random.default_rng(0)
    labels = {"train": rng.integers(0, 10, n_train), "test": rng.integers(0, 10, n_test)}
    arrays = {}
    for split, (images_name, labels_name) in idx.MNIST_FILES.items():
        n = len(labels[split])
        # Each class lights up its own row band, so a net can learn something.
        images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
        for i, label in enumerate(labels[split]):
            images[i, 2 * label : 2 * label + 3] = 255
        arrays[images_name] = images
        arrays[labels_name] = labels[split].astype(np.uint8)
    arrays.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    for k, (name, array) in enumerate(arrays.items()):
        idx.write_idx(folder / (name + (".gz" if k == 0 else "")), array)  # one file gzipped
    return arrays


def test_load_mnist_reads_a_tiny_folder(tmp_path):
    arrays = write_mnist(tmp_path)
    x_train, y_train, x_test, y_test = idx.load_mnist(tmp_path)
    assert x_train.shape == (60, 28, 28) and x_test.shape == (20, 28, 28)
    assert y_train.dtype == np.int64 and y_test.shape == (20,)
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])


def test_load_mnist_rejects_count_mismatch(tmp_path):
    write_mnist(tmp_path, **{"train-labels-idx1-ubyte": np.zeros(59, dtype=np.uint8)})
    with pytest.raises(ValueError, match="has 60 images but .* has 59 labels"):
        idx.load_mnist(tmp_path)


def test_load_mnist_rejects_wrong_dimensions(tmp_path):
    write_mnist(tmp_path, **{"t10k-images-idx3-ubyte": np.zeros((20, 784), dtype=np.uint8)})
    with pytest.raises(ValueError, match="expected 3 dimensions"):
        idx.load_mnist(tmp_path)


def test_digits_quick_on_idx_files(tmp_path):
    data = tmp_path / "mnist"
    write_mnist(data)
    out = tmp_path / "out"
    summary = main(["digits", "--quick", "--data", str(data), "--out", str(out)])
    rows = check_outputs(out, "digits", ["digits_accuracy.png", "digits_convergence.png"])
    assert all(0 <= v <= 1 for v in numbers(rows, "test_acc_mean"))
    assert "IDX files" in summary["dataset"]
    with gzip.open(data / "train-images-idx3-ubyte.gz") as handle:
        assert handle.read(4) == b"\x00\x00\x08\x03"
