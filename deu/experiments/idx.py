"""Read (and write) IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a header followed by a dense big-endian array:

* two zero bytes (the "magic" starts ``00 00``);
* one byte naming the element type (:data:`DTYPES`: ``0x08`` unsigned byte,
  ``0x09`` signed byte, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32,
  ``0x0E`` float64);
* one byte with the number of dimensions;
* each dimension as a big-endian uint32;
* the elements, row-major, big-endian.

:func:`read_idx` checks every one of these and raises :class:`IDXError` (a
``ValueError``) naming what it expected and what it found. :func:`load_mnist`
reads the four standard files of a folder (``train-images-idx3-ubyte`` and so
on, optionally gzipped) and checks that they fit together.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "DTYPES",
    "IDXError",
    "MissingIDXFile",
    "find_idx_file",
    "load_mnist",
    "read_idx",
    "write_idx",
]

# IDX type code -> big-endian numpy dtype.
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# The four files of MNIST and Fashion-MNIST: split -> (images, labels).
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class IDXError(ValueError):
    """A malformed IDX file or a set of IDX files that do not fit together."""


class MissingIDXFile(IDXError, FileNotFoundError):
    """An IDX file that is not there (both a ``ValueError`` and a ``FileNotFoundError``)."""


def _code_name(code: int) -> str:
    return f"0x{code:02X}"


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array held by the IDX bytes ``data`` (``name`` is used in errors)."""
    if len(data) < 4:
        raise IDXError(f"{name}: expected a 4-byte IDX header, found only {len(data)} bytes")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(
            f"{name}: bad magic number: expected the first two bytes to be 00 00, "
            f"found {data[0]:02X} {data[1]:02X} (not an IDX file?)"
        )
    code, ndim = data[2], data[3]
    if code not in DTYPES:
        known = ", ".join(_code_name(c) for c in DTYPES)
        raise IDXError(f"{name}: unknown IDX type code {_code_name(code)}; expected one of {known}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(
            f"{name}: truncated header: {ndim} dimensions need {header} header bytes, "
            f"found {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise IDXError(
            f"{name}: truncated payload: shape {shape} of {dtype.name} needs {expected} bytes "
            f"after the header, found {found}"
        )
    if found > expected:
        raise IDXError(
            f"{name}: {found - expected} trailing bytes: shape {shape} of {dtype.name} needs "
            f"{expected} bytes after the header, found {found}"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header)
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzip-compressed if it ends in ``.gz``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingIDXFile(2, "IDX file not found", str(path))
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        except (OSError, EOFError) as error:
            raise IDXError(f"{path}: not a readable gzip file ({error})") from error
    else:
        data = path.read_bytes()
    return parse_idx(data, str(path))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` to ``path`` as IDX (gzip-compressed if the name ends in ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX has no type code for {array.dtype}; use one of {list(codes)}")
    if array.ndim > 255:
        raise ValueError(f"IDX holds at most 255 dimensions, got {array.ndim}")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(header + payload)
    return path


def find_idx_file(folder: str | Path, name: str) -> Path:
    """``folder/name``, or its ``.gz``, or the same with ``.idx`` for ``-idx`` (MNIST mirrors)."""
    folder = Path(folder)
    alternative = name.replace("-idx", ".idx")
    candidates = [folder / n for base in (name, alternative) for n in (base, base + ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MissingIDXFile(
        2,
        f"IDX file not found (also tried {', '.join(c.name for c in candidates[1:])})",
        str(folder / name),
    )


def load_split(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of ``split`` ("train" or "test") from the MNIST files of ``folder``."""
    image_name, label_name = MNIST_FILES[split]
    image_path = find_idx_file(folder, image_name)
    label_path = find_idx_file(folder, label_name)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3:
        raise IDXError(
            f"{image_path}: expected 3 dimensions (count, rows, columns), found shape "
            f"{images.shape}"
        )
    if labels.ndim != 1:
        raise IDXError(f"{label_path}: expected 1 dimension (count), found shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise IDXError(f"{label_path}: expected integer labels, found {labels.dtype}")
    if len(images) != len(labels):
        raise IDXError(
            f"{split} split: {image_path.name} has {len(images)} images but "
            f"{label_path.name} has {len(labels)} labels; expected the same count"
        )
    if len(labels) and labels.min() < 0:
        raise IDXError(f"{label_path}: expected labels >= 0, found {labels.min()}")
    return images, labels.astype(np.int64)


def load_mnist(
    folder: str | Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)`` from an MNIST-style folder.

    Works for MNIST and Fashion-MNIST (the same four file names, optionally
    ``.gz``). Images keep their stored dtype, shape ``(count, rows, columns)``;
    labels are int64. Raises :class:`IDXError` (a ``ValueError``) when a file
    is missing or malformed, or when the files do not fit together.
    """
    train_images, train_labels = load_split(folder, "train")
    test_images, test_labels = load_split(folder, "test")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise IDXError(
            f"{folder}: train images are {train_images.shape[1:]} but test images are "
            f"{test_images.shape[1:]}; expected the same size"
        )
    return train_images, train_labels, test_images, test_labels
