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


def _simd_flags() -> list[str]:
    """Compiler flags that select ATen's AVX-512 or AVX2 vectors (and SLEEF).

    The kernel is built on the machine that runs it, so the capability torch
    detects there is the right one (torch's ATEN_CPU_CAPABILITY environment
    variable lowers it, e.g. to "avx2"). Elsewhere ATen's portable vectors are
    used: the same results, a lane at a time.
    """
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512":
        return [
            "-mavx512f",
            "-mavx512bw",
            "-mavx512vl",
            "-mavx512dq",
            "-mfma",
            "-mf16c",
            "-DCPU_CAPABILITY=AVX512",
            "-DCPU_CAPABILITY_AVX512",
        ]
    if capability in ("AVX2", "AVX512"):
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return []


def load() -> ModuleType | None:
    """The compiled extension, or None if it cannot be built here."""
    if "extension" in _state:
        return _state["extension"]
    extension: ModuleType | None = None
    try:
        from torch.utils import cpp_extension

        folder = _folder()
        # No contraction of a*b + c into one rounding: the subspace rules must
        # round as deu/_subspaces.py does (the explicit fmadd calls still fuse).
        # errno is never read: without it unused exp/sin/cos calls can be dropped.
        flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", *_simd_flags()]
        digest = hashlib.sha256(b"".join((folder / f).read_bytes() for f in _SOURCES))
        digest.update(" ".join(flags).encode())
        extension = cpp_extension.load(
            name=f"deu_cpu_{digest.hexdigest()[:16]}",
            sources=[str(folder / "deu_cpu.cpp")],
            extra_include_paths=[str(folder)],
            extra_cflags=flags,
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
