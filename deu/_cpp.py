"""The fused CPU kernel: built from generated/deu_cpu.cpp at first use, then cached.

The build uses the system C++ compiler through torch.utils.cpp_extension (and
ninja). If it fails, the generated PyTorch path is used instead, with one
warning per process.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from types import ModuleType

import deu._generated as generated

_SOURCES = ("deu_cpu.cpp", "deu_kernels.h")
_state: dict[str, ModuleType | None] = {}


def _folder() -> Path:
    return Path(generated.__file__).parent


def load() -> ModuleType | None:
    """The compiled extension, or None if it cannot be built here."""
    if "extension" in _state:
        return _state["extension"]
    extension: ModuleType | None = None
    try:
        from torch.utils import cpp_extension

        folder = _folder()
        digest = hashlib.sha256(b"".join((folder / f).read_bytes() for f in _SOURCES))
        extension = cpp_extension.load(
            name=f"deu_cpu_{digest.hexdigest()[:16]}",
            sources=[str(folder / "deu_cpu.cpp")],
            extra_include_paths=[str(folder)],
            extra_cflags=["-O3", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as error:  # noqa: BLE001 - any build failure means: fall back
        warnings.warn(
            f"deu: building the fused CPU kernel failed ({type(error).__name__}: {error}); "
            "using the generated PyTorch path",
            RuntimeWarning,
            stacklevel=3,
        )
    _state["extension"] = extension
    return extension


def available() -> bool:
    """Whether the kernel can be used; builds it if that was not tried yet."""
    return load() is not None


def loaded() -> bool:
    """Whether the kernel is built and loaded already (never builds)."""
    return _state.get("extension") is not None
